package llmops.esplugin;

import java.util.Locale;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.en.EnglishMinimalStemFilter;
import org.apache.lucene.analysis.en.EnglishPossessiveFilter;
import org.apache.lucene.analysis.en.KStemFilter;
import org.apache.lucene.analysis.en.PorterStemFilter;
import org.apache.lucene.analysis.snowball.SnowballFilter;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.index.IndexSettings;
import org.elasticsearch.index.analysis.AbstractTokenFilterFactory;
import org.tartarus.snowball.ext.EnglishStemmer;

/**
 * The {@code stemmer} token filter, English languages only (the names analysis-common uses):
 * {@code english}/{@code porter} (Porter), {@code porter2} (Snowball English),
 * {@code light_english}/{@code kstem}, {@code minimal_english}, {@code possessive_english}.
 * Any other language is refused at index creation, naming the setting.
 */
final class EnglishStemmerTokenFilterFactory extends AbstractTokenFilterFactory {

    private final String language;

    EnglishStemmerTokenFilterFactory(IndexSettings indexSettings, Environment env, String name, Settings settings) {
        super(name);
        // analysis-common accepts both keys; "name" is the older spelling.
        String configured = settings.get("language", settings.get("name", "english"));
        this.language = configured.toLowerCase(Locale.ROOT);
        switch (language) {
            case "english", "porter", "porter2", "light_english", "kstem", "minimal_english", "possessive_english" -> {
            }
            default -> throw new IllegalArgumentException(
                "stemmer filter [" + name + "]: language [" + configured + "] is not available on this node "
                    + "(the llmops local-node plugin has English stemmers only: english, porter, porter2, "
                    + "light_english, kstem, minimal_english, possessive_english)"
            );
        }
    }

    @Override
    public TokenStream create(TokenStream input) {
        return switch (language) {
            case "porter2" -> new SnowballFilter(input, new EnglishStemmer());
            case "light_english", "kstem" -> new KStemFilter(input);
            case "minimal_english" -> new EnglishMinimalStemFilter(input);
            case "possessive_english" -> new EnglishPossessiveFilter(input);
            default -> new PorterStemFilter(input);
        };
    }
}
