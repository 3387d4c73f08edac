package llmops.esplugin;

import java.io.IOException;
import org.apache.lucene.analysis.CharArraySet;
import org.apache.lucene.analysis.TokenFilter;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.tokenattributes.CharTermAttribute;
import org.apache.lucene.analysis.tokenattributes.PositionIncrementAttribute;

/**
 * {@code unique}: drops a token whose text was already seen in the stream. A dropped token's
 * position increment is carried to the next kept token so phrase positions stay right.
 */
final class UniqueTokenFilter extends TokenFilter {

    private final CharTermAttribute term = addAttribute(CharTermAttribute.class);
    private final PositionIncrementAttribute position = addAttribute(PositionIncrementAttribute.class);
    private final CharArraySet seen = new CharArraySet(16, false);

    UniqueTokenFilter(TokenStream input) {
        super(input);
    }

    @Override
    public boolean incrementToken() throws IOException {
        int skipped = 0;
        while (input.incrementToken()) {
            char[] buffer = term.buffer();
            int length = term.length();
            if (seen.contains(buffer, 0, length)) {
                skipped += position.getPositionIncrement();
                continue;
            }
            char[] copy = new char[length];
            System.arraycopy(buffer, 0, copy, 0, length);
            seen.add(copy);
            position.setPositionIncrement(position.getPositionIncrement() + skipped);
            return true;
        }
        return false;
    }

    @Override
    public void reset() throws IOException {
        super.reset();
        seen.clear();
    }
}
