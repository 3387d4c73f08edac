package llmops.esplugin;

import java.util.List;
import java.util.regex.Pattern;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.pattern.PatternCaptureGroupTokenFilter;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.index.IndexSettings;
import org.elasticsearch.index.analysis.AbstractTokenFilterFactory;

/** {@code pattern_capture}: {@code patterns} (required) and {@code preserve_original} (true). */
final class PatternCaptureTokenFilterFactory extends AbstractTokenFilterFactory {

    private final Pattern[] patterns;
    private final boolean preserveOriginal;

    PatternCaptureTokenFilterFactory(IndexSettings indexSettings, Environment env, String name, Settings settings) {
        super(name);
        List<String> regexes = settings.getAsList("patterns", null);
        if (regexes == null || regexes.isEmpty()) {
            throw new IllegalArgumentException("pattern_capture filter [" + name + "] requires [patterns]");
        }
        patterns = regexes.stream().map(Pattern::compile).toArray(Pattern[]::new);
        preserveOriginal = settings.getAsBoolean("preserve_original", true);
    }

    @Override
    public TokenStream create(TokenStream input) {
        return new PatternCaptureGroupTokenFilter(input, preserveOriginal, patterns);
    }
}
