package streamsync.testanalysis;

import java.io.IOException;
import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;

import org.apache.lucene.analysis.CharArraySet;
import org.apache.lucene.analysis.TokenFilter;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.Tokenizer;
import org.apache.lucene.analysis.email.UAX29URLEmailTokenizer;
import org.apache.lucene.analysis.miscellaneous.RemoveDuplicatesTokenFilter;
import org.apache.lucene.analysis.pattern.PatternCaptureGroupTokenFilter;
import org.apache.lucene.analysis.standard.StandardAnalyzer;
import org.apache.lucene.analysis.tokenattributes.CharTermAttribute;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.index.IndexSettings;
import org.elasticsearch.index.analysis.AbstractTokenFilterFactory;
import org.elasticsearch.index.analysis.AbstractTokenizerFactory;
import org.elasticsearch.index.analysis.TokenFilterFactory;
import org.elasticsearch.index.analysis.TokenizerFactory;
import org.elasticsearch.indices.analysis.AnalysisModule.AnalysisProvider;
import org.elasticsearch.plugins.AnalysisPlugin;
import org.elasticsearch.plugins.Plugin;

/**
 * Test infrastructure of streamsync, never shipped (see README.md). The integ-test-zip distribution
 * of Elasticsearch lacks the analysis-common module, and the settings of the .security index name
 * three of its components: the token filters {@code pattern_capture} and {@code unique} and the
 * tokenizer {@code uax_url_email} ({@code lowercase} is built into the server). This plugin
 * registers exactly those three, with analysis-common's names and settings, on Lucene's classes.
 */
public final class TestAnalysisPlugin extends Plugin implements AnalysisPlugin {

    @Override
    public Map<String, AnalysisProvider<TokenFilterFactory>> getTokenFilters() {
        return Map.of(
            "pattern_capture", AnalysisPlugin.requiresAnalysisSettings(PatternCaptureFactory::new),
            "unique", UniqueFactory::new
        );
    }

    @Override
    public Map<String, AnalysisProvider<TokenizerFactory>> getTokenizers() {
        return Map.of("uax_url_email", UaxUrlEmailFactory::new);
    }

    /** {@code pattern_capture}: settings {@code patterns} (required) and {@code preserve_original}. */
    static final class PatternCaptureFactory extends AbstractTokenFilterFactory {
        private final Pattern[] patterns;
        private final boolean preserveOriginal;

        PatternCaptureFactory(IndexSettings indexSettings, Environment environment, String name, Settings settings) {
            super(name, settings);
            List<String> regexes = settings.getAsList("patterns", null, false);
            if (regexes == null) {
                throw new IllegalArgumentException("required setting 'patterns' is missing for token filter [" + name + "]");
            }
            patterns = regexes.stream().map(Pattern::compile).toArray(Pattern[]::new);
            preserveOriginal = settings.getAsBoolean("preserve_original", true);
        }

        @Override
        public TokenStream create(TokenStream tokenStream) {
            return new PatternCaptureGroupTokenFilter(tokenStream, preserveOriginal, patterns);
        }
    }

    /**
     * {@code unique}: drops a token whose term came before. With {@code only_on_same_position: true}
     * only at the same position, which is Lucene's RemoveDuplicatesTokenFilter; by default anywhere
     * in the stream, for which Lucene has no filter (see UniqueTermsFilter).
     */
    static final class UniqueFactory extends AbstractTokenFilterFactory {
        private final boolean onlyOnSamePosition;

        UniqueFactory(IndexSettings indexSettings, Environment environment, String name, Settings settings) {
            super(name, settings);
            onlyOnSamePosition = settings.getAsBoolean("only_on_same_position", false);
        }

        @Override
        public TokenStream create(TokenStream tokenStream) {
            return onlyOnSamePosition ? new RemoveDuplicatesTokenFilter(tokenStream) : new UniqueTermsFilter(tokenStream);
        }
    }

    /** Passes each term only the first time the stream produces it (a Lucene CharArraySet of the terms seen). */
    static final class UniqueTermsFilter extends TokenFilter {
        private final CharTermAttribute term = addAttribute(CharTermAttribute.class);
        private final CharArraySet seen = new CharArraySet(8, false);

        UniqueTermsFilter(TokenStream input) {
            super(input);
        }

        @Override
        public boolean incrementToken() throws IOException {
            while (input.incrementToken()) {
                if (seen.contains(term.buffer(), 0, term.length()) == false) {
                    seen.add(term.toString()); // a copy: the attribute's buffer is reused
                    return true;
                }
            }
            return false;
        }

        @Override
        public void reset() throws IOException {
            super.reset();
            seen.clear();
        }
    }

    /** {@code uax_url_email}: setting {@code max_token_length} (default 255, as Lucene's). */
    static final class UaxUrlEmailFactory extends AbstractTokenizerFactory {
        private final int maxTokenLength;

        UaxUrlEmailFactory(IndexSettings indexSettings, Environment environment, String name, Settings settings) {
            super(indexSettings, settings, name);
            maxTokenLength = settings.getAsInt("max_token_length", StandardAnalyzer.DEFAULT_MAX_TOKEN_LENGTH);
        }

        @Override
        public Tokenizer create() {
            UAX29URLEmailTokenizer tokenizer = new UAX29URLEmailTokenizer();
            tokenizer.setMaxTokenLength(maxTokenLength);
            return tokenizer;
        }
    }
}
