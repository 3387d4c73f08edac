"""Client-side English stemming for nodes without the ``english`` analyzer.

Why in Python: the minimal Elasticsearch distribution we run locally has no analysis-common
module, so no stemmer token filter exists on the node. Without stemming, BM25 misses
inflections ("mice" vs "mouse" aside, "studies"/"study", "infected"/"infection"), which costs
SciFact ~0.01 nDCG@10. Instead, the writer stores a stemmed copy of ``title``/``text`` in shadow
fields (``title_stemmed``/``text_stemmed``) and the retriever stems the query the same way, so the
two sides always go through the same function. The stemmer is Snowball's English (Porter2, the
revision of the Porter stemmer that Lucene's ``english`` analyzer uses) from PyStemmer.

Tokens: lowercase, English possessive ``'s`` dropped (as ``english_possessive_stemmer`` does),
then runs of letters/digits. Output is the stems joined by single spaces; the node's analyzer
(``standard`` tokenizer + ``lowercase`` + stopwords) re-tokenizes it into exactly these stems.
"""

from __future__ import annotations

import re
import threading
from importlib.metadata import PackageNotFoundError, version

import Stemmer

#: Suffix of the shadow text fields that hold stemmed copies (``text`` → ``text_stemmed``).
STEMMED_SUFFIX = "_stemmed"

#: What the ``_meta`` of an index records about the stemmer that filled its shadow fields.
STEMMER_NAME = "snowball-english"

_POSSESSIVE = re.compile(r"['\u2019]s\b")
# Letters and digits of any script; "_" is a word character in ``\w`` but splits tokens here,
# as in the standard tokenizer.
_TOKEN = re.compile(r"[^\W_]+")

# PyStemmer objects are not thread-safe (the server answers from several threads): one per
# thread. Each keeps its own cache of recent words, so repeated terms cost a dict look-up.
_local = threading.local()


def _stemmer() -> Stemmer.Stemmer:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = Stemmer.Stemmer("english")
        _local.stemmer = stemmer
    return stemmer


def tokenize(text: str) -> list[str]:
    """Lowercased word tokens without English possessives: ``"Patient's RNA-seq"`` →
    ``["patient", "rna", "seq"]``."""
    return _TOKEN.findall(_POSSESSIVE.sub("", text.lower()))


def stem_words(words: list[str]) -> list[str]:
    """Snowball English stems of already-lowercased words."""
    return list(_stemmer().stemWords(words))


def stem_text(text: str | None) -> str:
    """The stemmed form of a text, as stored in a shadow field and sent as the query."""
    if not text:
        return ""
    return " ".join(stem_words(tokenize(text)))


def stemmed_field(name: str) -> str:
    """Shadow field of a text field: ``text`` → ``text_stemmed``."""
    return f"{name}{STEMMED_SUFFIX}"


def is_stemmed_field(name: str) -> bool:
    """Whether a (possibly boosted, ``text_stemmed^2``) field name is a shadow field."""
    return name.split("^", 1)[0].endswith(STEMMED_SUFFIX)


def stemmer_version() -> str:
    """``snowball-english (PyStemmer 3.1.0)``: recorded in ``_meta`` with the index."""
    try:
        return f"{STEMMER_NAME} (PyStemmer {version('PyStemmer')})"
    except PackageNotFoundError:  # pragma: no cover - the import above would have failed
        return STEMMER_NAME
