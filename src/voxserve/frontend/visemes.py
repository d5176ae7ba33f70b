"""Phonemes to visemes: the 22 mouth shapes (0-21) of the set Azure Speech and Oculus-style lip-sync rigs use.
One table covers espeak-ng's IPA output for the languages Piper voices speak; a symbol it lacks falls back by kind
(vowel-like to 1, consonant-like to 19), so every phoneme has a viseme."""

from __future__ import annotations

SILENCE = 0

# Diphthongs and affricates (two symbols) are one mouth movement each.
VISEMES: dict[str, int] = {
    # diphthongs and affricates
    "aɪ": 11, "aʊ": 9, "ɔɪ": 10, "eɪ": 4, "oʊ": 8, "əʊ": 8, "ɪə": 6, "eə": 4, "ʊə": 4, "tʃ": 16, "dʒ": 16,
    "ts": 15, "dz": 15,
    # vowels
    "æ": 1, "ə": 1, "ʌ": 1, "ɐ": 1, "ᵻ": 6, "a": 2, "ɑ": 2, "ɒ": 3, "ɔ": 3, "o": 8, "ɵ": 8, "e": 4, "ɛ": 4,
    "ʊ": 4, "ɚ": 5, "ɝ": 5, "ɜ": 5, "i": 6, "ɪ": 6, "ɨ": 6, "y": 7, "ʏ": 7, "u": 7, "ɯ": 7, "ʉ": 7, "ø": 8,
    "œ": 4, "ɤ": 8, "ɘ": 1,
    # glides and approximants
    "j": 6, "ɥ": 7, "w": 7, "ʍ": 7, "h": 12, "ɦ": 12, "ɹ": 13, "r": 13, "ʁ": 13, "ʀ": 13, "ɻ": 13, "l": 14,
    "ɫ": 14, "ʎ": 14, "ɭ": 14, "ʟ": 14,
    # fricatives
    "s": 15, "z": 15, "ɕ": 16, "ʑ": 16, "ʃ": 16, "ʒ": 16, "ʂ": 16, "ʐ": 16, "ç": 12, "ð": 17, "θ": 19,
    "f": 18, "v": 18, "ʋ": 18, "x": 20, "ɣ": 20, "χ": 20, "β": 21, "ɸ": 21,
    # stops, nasals, flaps
    "t": 19, "d": 19, "n": 19, "ɾ": 19, "ʔ": 19, "ɲ": 19, "c": 20, "ɟ": 20, "k": 20, "g": 20, "ɡ": 20,
    "ŋ": 20, "q": 20, "ɴ": 20, "p": 21, "b": 21, "m": 21, "ɱ": 18,
}  # fmt: skip
_VOWELS = frozenset("aeiouyæøœɐɑɒɔəɘɚɛɜɝɞɤɨɪɯɵʉʊʌʏᵻ")


def viseme(phoneme: str) -> int:
    """The viseme of one phoneme unit (stress and length marks aside)."""
    core = "".join(char for char in phoneme if char not in "ˈˌːˑ")
    if not core:
        return SILENCE
    for unit in (core, core[:2], core[0]):
        if unit in VISEMES:
            return VISEMES[unit]
    return 1 if core[0] in _VOWELS else 19
