"""The shared sound world: 20 sound sources in 5 types, speech-like material, and the clip recipes of
the ten synthetic tasks and the pretraining corpus.

Each recipe takes the clip's own `rng` and the label factor(s) and returns float64 audio at 16 kHz.
The label decides one factor; every other parameter (speaker, timbre, size, level, noise, room,
onset time) is drawn from `rng` independently of the label. Fixed definitions that give labels their
meaning (the command words, the ten languages, the stroke recipes) do not depend on the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from msmbench.data import synth_sounds as snd
from msmbench.data.synth_sounds import SR, Onset, Segment, n_samples, normalise, place

# ----------------------------------------------------------------------------------------------
# Sources: what makes a sound (its type and kind), independent of when it sounds

SOURCE_TYPES = {
    "voice": ("voice_low", "voice_high", "whisper", "hum"),
    "tone": ("flute", "brass", "pluck", "organ"),
    "strike": ("membrane", "bar", "plate", "gong"),
    "texture": ("rain", "wind", "engine", "hiss"),
    "signal": ("chirp_up", "chirp_down", "beep", "siren"),
}
SOURCES = tuple(s for kinds in SOURCE_TYPES.values() for s in kinds)
SOURCE_TYPE_OF = {s: t for t, kinds in SOURCE_TYPES.items() for s in kinds}
# Nominal length (s) of one short event of each type, inside a temporal pattern.
EVENT_SECONDS = {"voice": (0.2, 0.45), "tone": (0.12, 0.35), "strike": (0.3, 0.8), "texture": (0.08, 0.3),
                 "signal": (0.08, 0.3)}

# A universal phone inventory for babble (emotion, count, events, pretraining).
BABBLE_VOWELS = ("i", "e", "E", "a", "O", "o", "u", "V")
BABBLE_CONSONANTS = ("p", "t", "k", "b", "d", "g", "m", "n", "s", "S", "f", "l", "r", "h", "w", "j")


@dataclass(frozen=True)
class Source:
    """One sounding object in a clip: repeated events of a source reuse these parameters."""

    name: str
    speaker: snd.Speaker | None = None
    timbre: snd.Timbre | None = None
    f0: float = 0.0
    strike: snd.Strike | None = None


def new_source(rng: np.random.Generator, name: str) -> Source:
    kind = SOURCE_TYPE_OF[name]
    if kind == "voice":
        return Source(name, speaker=snd.random_speaker(rng, "high" if name == "voice_high" else
                                                      "low" if name == "voice_low" else None))
    if kind == "tone":
        return Source(name, timbre=_tone_timbre(rng, name), f0=float(110 * 2 ** rng.uniform(0, 3)))
    if kind == "strike":
        return Source(name, strike=snd.random_strike(rng, name))
    if kind == "signal":
        return Source(name, f0=float(np.exp(rng.uniform(np.log(400), np.log(3000)))))
    return Source(name)


# Instrument families: (low, high) ranges of Timbre fields; the body resonance's frequency comes from
# random_timbre, so that it varies within every family.
_TONE_FAMILIES = {
    "flute": dict(tilt_db=(-16, -10), even_db=(-6, 0), formant_db=(0, 6), attack=(0.03, 0.1), decay=(1, 1),
                  sustain=(0.6, 0.9), vibrato_hz=(4.5, 6), vibrato_cents=(10, 30), breath=(0.08, 0.2),
                  detune_cents=(0, 0)),
    "brass": dict(tilt_db=(-5, -1), even_db=(-3, 2), formant_db=(6, 14), attack=(0.04, 0.1), decay=(1, 1),
                  sustain=(0.6, 0.9), vibrato_hz=(4.5, 6), vibrato_cents=(0, 15), breath=(0, 0.03),
                  detune_cents=(0, 0)),
    "pluck": dict(tilt_db=(-9, -3), even_db=(-6, 3), formant_db=(0, 15), attack=(0.001, 0.005), decay=(0.08, 0.5),
                  sustain=(0, 0), vibrato_hz=(5, 5), vibrato_cents=(0, 0), breath=(0, 0), detune_cents=(0, 6)),
    "organ": dict(tilt_db=(-9, -4), even_db=(-25, -12), formant_db=(0, 6), attack=(0.01, 0.04), decay=(1, 1),
                  sustain=(1, 1), vibrato_hz=(5, 5), vibrato_cents=(0, 0), breath=(0, 0), detune_cents=(3, 10)),
}


def _tone_timbre(rng: np.random.Generator, name: str) -> snd.Timbre:
    """A timbre of an instrument family; every parameter still varies within the family."""
    formant_hz = snd.random_timbre(rng).formant_hz
    ranges = _TONE_FAMILIES[name]
    return snd.Timbre(formant_hz=formant_hz, **{k: float(rng.uniform(lo, hi)) for k, (lo, hi) in ranges.items()})


def render_event(rng: np.random.Generator, src: Source, n: int) -> np.ndarray:
    """One event of `src`, n samples long (strikes ring within it), unit RMS or peak."""
    kind = SOURCE_TYPE_OF[src.name]
    if kind == "voice":
        return _voice_event(rng, src, n)
    if kind == "tone":
        f0 = src.f0 * 2 ** (rng.choice([0, 2, 4, 7, 9, 12]) / 12)  # a pentatonic melody around the source
        return snd.tone(rng, f0, n, src.timbre)
    if kind == "strike":
        return snd.strike(rng, src.strike, n)
    if kind == "texture":
        return snd.fade(snd.texture(rng, src.name, n), 0.01)
    return _signal_event(rng, src, n)


def _voice_event(rng: np.random.Generator, src: Source, n: int) -> np.ndarray:
    return _fit(snd.voice(rng, src.speaker, _voice_segments(rng, src, n / SR), whisper=src.name == "whisper"), n)


def _voice_segments(rng: np.random.Generator, src: Source, seconds: float, gain: float = 1.0) -> list[Segment]:
    """Speech (or a hummed melody of 1-3 notes) lasting about `seconds`."""
    if src.name == "hum":
        notes = int(rng.integers(1, 4))
        return [Segment("m", seconds / notes, f, f, gain) for f in 2 ** (rng.choice([-2, 0, 2, 3, 5], notes) / 12)]
    segs = babble_segments(rng, seconds, rate=rng.uniform(0.8, 1.2), f0_range=0.25)
    return [Segment(x.sym, x.dur, x.f0_start, x.f0_end, x.gain * gain) for x in segs]


def _voice_pattern(rng: np.random.Generator, src: Source, onsets: list[Onset], clip_n: int) -> np.ndarray:
    """All events of a voice as one utterance with pauses between them (one synthesis call)."""
    segs: list[Segment] = []
    t = 0.0
    for i, o in enumerate(onsets):
        end = min(o.start + o.dur, onsets[i + 1].start if i + 1 < len(onsets) else clip_n / SR)
        if end - o.start < 0.03:
            continue
        if o.start > t:
            segs.append(Segment("_", o.start - t))
        new = _voice_segments(rng, src, end - o.start, o.gain)
        squeeze = min(1.0, (end - o.start) / sum(x.dur for x in new))  # talk faster, keep the rhythm
        segs += [Segment(x.sym, x.dur * squeeze, x.f0_start, x.f0_end, x.gain) for x in new]
        t = o.start + sum(x.dur for x in new) * squeeze
    if not segs:
        return np.zeros(clip_n)
    return _fit(snd.voice(rng, src.speaker, segs, whisper=src.name == "whisper"), clip_n)


def _signal_event(rng: np.random.Generator, src: Source, n: int) -> np.ndarray:
    if src.name == "chirp_up":
        return snd.chirp(rng, src.f0 / 2, src.f0 * 1.5, n, harmonics=2)
    if src.name == "chirp_down":
        return snd.chirp(rng, src.f0 * 1.5, src.f0 / 2, n, harmonics=2)
    if src.name == "beep":
        return snd.chirp(rng, src.f0, src.f0, n, harmonics=3)
    return snd.siren(rng, src.f0, n)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))


def render_pattern(rng: np.random.Generator, src: Source, pattern: str, clip_n: int) -> np.ndarray:
    """The source sounding in a temporal pattern over a clip of clip_n samples."""
    lo, hi = EVENT_SECONDS[SOURCE_TYPE_OF[src.name]]
    onsets = snd.pattern_onsets(rng, pattern, clip_n / SR, rng.uniform(lo, hi))
    if SOURCE_TYPE_OF[src.name] == "strike" and pattern == "sustained":  # a sustained strike is a roll
        o = onsets[0]
        gap = rng.uniform(0.04, 0.07)
        onsets = [Onset(o.start + t, 0.3, rng.uniform(0.6, 1.0)) for t in np.arange(0, o.dur, gap)]
    if SOURCE_TYPE_OF[src.name] == "voice":
        return _voice_pattern(rng, src, onsets, clip_n)
    # A repeated event reuses one of three renderings (the same object sounding again), which keeps
    # fast patterns cheap. Strikes ring to the end of the clip; other events are cut to their length.
    is_strike = SOURCE_TYPE_OF[src.name] == "strike"
    events = []  # (start, length, gain) in samples
    for o in onsets:
        start = n_samples(o.start)
        length = clip_n - start if is_strike else min(clip_n - start, n_samples(o.dur))
        if length > 16:
            events.append((start, length, o.gain))
    if not events:
        return np.zeros(clip_n)
    longest = max(length for _, length, _ in events)
    variants = [render_event(rng, src, longest) for _ in range(min(3, len(events)))]
    out = np.zeros(clip_n)
    for i, (start, length, gain) in enumerate(events):
        x = variants[i % len(variants)][:length]
        place(out, x if is_strike or length == longest else snd.fade(x, 0.01), start, gain)
    return out


# ----------------------------------------------------------------------------------------------
# Speech-like material


def babble_segments(rng: np.random.Generator, seconds: float, rate: float = 1.0, f0_range: float = 0.2,
                    vowels=BABBLE_VOWELS, consonants=BABBLE_CONSONANTS) -> list[Segment]:
    """Random CV/CVC syllables filling `seconds`, with a wandering, declining f0 (octaves range)."""
    segs: list[Segment] = []
    total = 0.0
    f0 = 2 ** (f0_range * rng.uniform(-0.5, 1.0))
    while total < seconds:
        syl = rng.uniform(0.14, 0.26) / rate
        nxt = 2 ** (f0_range * rng.uniform(-1.0, 1.0)) * (1 - 0.1 * total / max(seconds, 1e-3))
        onset = str(rng.choice(consonants)) if rng.uniform() < 0.85 else ""
        coda = str(rng.choice(consonants)) if rng.uniform() < 0.3 else ""
        new = snd.syllable_segments(rng, onset, str(rng.choice(vowels)), coda, syl, f0, nxt)
        if rng.uniform() < 0.12:
            new.append(Segment("_", rng.uniform(0.05, 0.25) / rate))
        segs += new
        total += sum(s.dur for s in new)
        f0 = nxt
    return segs


def speech(rng: np.random.Generator, speaker: snd.Speaker, n: int, rate: float = 1.0,
           f0_range: float = 0.2) -> np.ndarray:
    """Babble by one speaker, exactly n samples."""
    return _fit(snd.voice(rng, speaker, babble_segments(rng, n / SR, rate, f0_range)), n)


# ----------------------------------------------------------------------------------------------
# Task recipes


def background(rng: np.random.Generator, n: int) -> np.ndarray:
    """A background of a random texture kind (the label never depends on it)."""
    return snd.texture(rng, str(rng.choice(SOURCE_TYPES["texture"])), n)


def finish(rng: np.random.Generator, x: np.ndarray, snr_db: tuple[float, float] = (5.0, 30.0),
           textured_background: float = 0.5) -> np.ndarray:
    """Record `x` in a random room; half the time over a textured background instead of plain noise."""
    room = snd.random_room(rng, snr_db)
    bg = background(rng, len(x)) + 0.3 * snd.coloured_noise(rng, len(x), room.noise_colour) \
        if rng.uniform() < textured_background else None
    return snd.record(rng, x, room, bg)


# --- percussion (Beijing Opera): strike family

PERCUSSION_FAMILIES = ("bar", "gong", "membrane", "plate")


def percussion_clip(rng: np.random.Generator, family: int, seconds: float) -> np.ndarray:
    """1-4 strikes of one instrument of `family`; size, damping, hardness, rhythm and room random."""
    n = n_samples(seconds)
    instrument = snd.random_strike(rng, PERCUSSION_FAMILIES[family])
    out = np.zeros(n)
    for t in np.sort(rng.uniform(0, seconds * 0.75, rng.integers(1, 5))):
        place(out, snd.strike(rng, instrument, n - n_samples(t)), n_samples(t), rng.uniform(0.5, 1.0))
    return finish(rng, out)


# --- emotion (CREMA-D): prosody class


@dataclass(frozen=True)
class Prosody:
    f0: float  # factor on the speaker's habitual f0
    f0_range: float  # octaves of f0 movement
    rate: float  # syllable rate factor
    pole_shift: float  # glottal pole shift: negative = brighter, pressed voice
    jitter: float  # factor on the speaker's jitter
    breath: float  # added breathiness


EMOTIONS = {
    "anger": Prosody(1.15, 0.35, 1.12, -0.035, 1.5, 0.00),
    "disgust": Prosody(0.92, 0.25, 0.82, 0.015, 3.0, 0.05),
    "fear": Prosody(1.30, 0.22, 1.25, 0.00, 3.0, 0.20),
    "happy": Prosody(1.20, 0.50, 1.08, -0.02, 1.0, 0.00),
    "neutral": Prosody(1.00, 0.12, 1.00, 0.00, 1.0, 0.00),
    "sad": Prosody(0.88, 0.06, 0.75, 0.03, 1.0, 0.12),
}
EMOTION_NAMES = tuple(EMOTIONS)


def emotion_clip(rng: np.random.Generator, emotion: int, seconds: float, spread: float = 0.4) -> np.ndarray:
    """A random speaker says random syllables with the prosody of `emotion`, each prosody parameter
    perturbed per clip (`spread`) so that neighbouring emotions overlap."""
    p = EMOTIONS[EMOTION_NAMES[emotion]]
    sp = snd.random_speaker(rng)

    def vary(x: float, rel: float) -> float:
        return float(x * np.exp(spread * rel * rng.standard_normal()))

    # The speaker's own voice quality varies less than in other tasks, so that the emotion's shift
    # of it (pressed/bright vs lax/dark, breathy) is not drowned.
    speaker = snd.Speaker(f0=sp.f0 * vary(p.f0, 0.1), formant_scale=sp.formant_scale,
                          breathiness=rng.uniform(0.0, 0.1) + p.breath * rng.uniform(0.5, 1.5),
                          glottal_pole=rng.uniform(0.925, 0.955) + p.pole_shift * rng.uniform(0.4, 1.6),
                          jitter=sp.jitter * vary(p.jitter, 0.3), shimmer=sp.shimmer)
    n = n_samples(seconds)
    lead = n_samples(rng.uniform(0, 0.4))
    x = np.zeros(n)
    utter = speech(rng, speaker, n - lead - n_samples(rng.uniform(0, 0.4)), rate=vary(p.rate, 0.15),
                   f0_range=vary(p.f0_range, 0.4))
    place(x, utter, lead)
    return finish(rng, x, snr_db=(10, 35))


# --- count (LibriCount): number of simultaneous voices


def count_clip(rng: np.random.Generator, count: int, seconds: float) -> np.ndarray:
    """`count` random speakers babbling at once (levels +-3 dB), level-normalised; 0 = background only."""
    n = n_samples(seconds)
    mix = np.zeros(n)
    for _ in range(count):
        mix += snd.db_to_gain(rng.uniform(-3, 3)) * speech(rng, snd.random_speaker(rng), n, rate=rng.uniform(0.8, 1.25))
    if count == 0:
        return snd.record(rng, background(rng, n) * 1e-3, snd.random_room(rng), background(rng, n))
    return finish(rng, normalise(mix), snr_db=(10, 30))


# --- stroke / tonic (Mridangam): one drum, two labels

TONICS = {"B": 246.94, "C": 261.63, "C#": 277.18, "D": 293.66, "D#": 311.13, "E": 329.63}
TONIC_NAMES = tuple(TONICS)


@dataclass(frozen=True)
class StrokeRecipe:
    weights: tuple[float, ...]  # treble head (harmonic modes 1..6) excitation
    decay: float  # s, treble ring
    noise: float  # slap noise share
    bass: float  # share of the bass (left) head
    bass_glide: float  # upward pitch glide of the bass head (gumki)


STROKES = {
    "bheem": StrokeRecipe((1.0, 0.3, 0.1, 0.0, 0.0, 0.0), 0.35, 0.05, 0.8, 0.00),
    "cha": StrokeRecipe((0.1, 0.2, 0.5, 1.0, 0.8, 0.6), 0.06, 0.3, 0.0, 0.00),
    "dheem": StrokeRecipe((1.0, 0.5, 0.2, 0.1, 0.0, 0.0), 0.45, 0.05, 0.6, 0.15),
    "dhin": StrokeRecipe((0.3, 1.0, 0.6, 0.2, 0.1, 0.0), 0.30, 0.05, 0.6, 0.00),
    "num": StrokeRecipe((0.2, 1.0, 0.8, 0.3, 0.1, 0.0), 0.35, 0.05, 0.0, 0.00),
    "ta": StrokeRecipe((0.8, 0.6, 0.4, 0.3, 0.2, 0.1), 0.12, 0.2, 0.0, 0.00),
    "tha": StrokeRecipe((0.1, 0.05, 0.0, 0.0, 0.0, 0.0), 0.05, 0.6, 1.0, 0.00),
    "tham": StrokeRecipe((0.6, 0.6, 0.3, 0.2, 0.0, 0.0), 0.25, 0.1, 1.0, 0.05),
    "thi": StrokeRecipe((1.0, 0.2, 0.1, 0.0, 0.0, 0.0), 0.08, 0.35, 0.0, 0.00),
    "thom": StrokeRecipe((0.15, 0.05, 0.0, 0.0, 0.0, 0.0), 0.1, 0.1, 1.0, 0.25),
}
STROKE_NAMES = tuple(STROKES)


def mridangam_clip(rng: np.random.Generator, stroke: int, tonic: int, seconds: float) -> np.ndarray:
    """One stroke on a drum tuned to a tonic (+-30 cents of tuning error), random bass pitch, room."""
    r = STROKES[STROKE_NAMES[stroke]]
    n = n_samples(seconds)
    f0 = TONICS[TONIC_NAMES[tonic]] * 2 ** (rng.uniform(-30, 30) / 1200)
    weights = tuple(np.asarray(r.weights) * rng.uniform(0.5, 1.5, 6))
    treble = snd.Strike(ratios=tuple(snd.STRIKE_RATIOS["harmonic"]), f0=f0, decay=r.decay * rng.uniform(0.6, 1.5),
                        damping_slope=rng.uniform(0.2, 0.8), hardness=1.0, noise=r.noise * rng.uniform(0.5, 1.5),
                        noise_hz=rng.uniform(1500, 5000), glide=0.0, weights=weights)
    out = np.zeros(n)
    start = n_samples(rng.uniform(0.0, 0.06))
    place(out, snd.strike(rng, treble, n - start), start)
    if r.bass:
        bass = snd.Strike(ratios=tuple(snd.STRIKE_RATIOS["membrane"][:4]), f0=rng.uniform(75, 130),
                          decay=rng.uniform(0.1, 0.4), damping_slope=1.0, hardness=1.5, noise=0.1,
                          noise_hz=rng.uniform(300, 1200), glide=-r.bass_glide * rng.uniform(0.5, 1.5))
        place(out, snd.strike(rng, bass, n - start), start, r.bass * rng.uniform(0.5, 1.2))
    return finish(rng, out, snr_db=(15, 40), textured_background=0.2)


# --- pitch (NSynth): MIDI note of a tone

PITCH_MIDI = tuple(range(36, 84))  # C2..B5: 48 notes, enough clips per note at a few hundred clips


def pitch_clip(rng: np.random.Generator, note: int, seconds: float) -> np.ndarray:
    """One note (+-15 cents) with a random timbre and envelope, onset in the first 0.2 s."""
    n = n_samples(seconds)
    f0 = 440.0 * 2 ** ((PITCH_MIDI[note] - 69 + rng.uniform(-0.15, 0.15)) / 12)
    timbre = snd.random_timbre(rng)
    start = n_samples(rng.uniform(0, 0.2))
    length = min(n - start, n_samples(rng.uniform(0.6, 1.6)))
    out = np.zeros(n)
    place(out, snd.tone(rng, f0, length, timbre), start)
    return finish(rng, out, snr_db=(15, 40), textured_background=0.2)


# --- commands (Speech Commands): fixed words, silence, unknown

# Ten command words, in pairs made of the same phones in a different order: a bag-of-frames
# (mean-pooled) model cannot tell the members of a pair apart; a model of the sequence can.
COMMAND_WORDS = {"yes": "sano", "no": "naso", "up": "kita", "down": "tika", "left": "mulo", "right": "lumo",
                 "on": "pedu", "off": "depu", "stop": "rosi", "go": "sori"}
UNKNOWN_WORDS = ("sati", "kano", "miru", "pelo", "tuki", "dosa", "lipa", "nemu", "gobi", "faru", "vesi", "koma",
                 "ritu", "sumi", "bela", "tono", "ganu", "pisa", "mero", "lodi")
COMMAND_LABELS = tuple(COMMAND_WORDS) + ("_silence_", "_unknown_")


def commands_clip(rng: np.random.Generator, label: int, seconds: float) -> np.ndarray:
    """A random speaker says a word (at a random rate and time) in noise; silence = background only."""
    n = n_samples(seconds)
    name = COMMAND_LABELS[label]
    if name == "_silence_":
        return snd.record(rng, background(rng, n) * 1e-3, snd.random_room(rng), background(rng, n))
    word = COMMAND_WORDS[name] if name in COMMAND_WORDS else str(rng.choice(UNKNOWN_WORDS))
    x = voice_word(rng, snd.random_speaker(rng), word, rate=rng.uniform(0.75, 1.3))
    out = np.zeros(n)
    place(out, x[: n - 1], n_samples(rng.uniform(0, max(0.0, seconds - len(x) / SR))))
    return finish(rng, out)


def voice_word(rng: np.random.Generator, speaker: snd.Speaker, word: str, rate: float) -> np.ndarray:
    """A CV-syllable word such as "sano": stressed first syllable, falling or rising f0."""
    segs: list[Segment] = []
    f0 = rng.uniform(1.0, 1.2)
    slope = rng.uniform(-0.25, 0.1)
    for i in range(0, len(word), 2):
        nxt = f0 * 2 ** (slope * rng.uniform(0.5, 1.5))
        stress = 1.25 if i == 0 else 1.0
        segs += snd.syllable_segments(rng, word[i], word[i + 1], "", rng.uniform(0.17, 0.24) * stress / rate, f0, nxt)
        f0 = nxt
    return snd.voice(rng, speaker, segs)


# --- multilabel (FSD50K): which sources are in a mixture


def multilabel_clip(rng: np.random.Generator, sources: tuple[int, ...], seconds: float) -> np.ndarray:
    """The given sources (indices into SOURCES), each in a random temporal pattern, mixed at +-6 dB."""
    n = n_samples(seconds)
    mix = np.zeros(n)
    for s in sources:
        src = new_source(rng, SOURCES[s])
        x = render_pattern(rng, src, str(rng.choice(snd.PATTERNS)), n)
        mix += snd.db_to_gain(rng.uniform(-6, 6)) * normalise(x)
    return finish(rng, mix, snr_db=(10, 35), textured_background=0.0)


# --- events (ESC-50): source type x temporal pattern

EVENT_LABELS = tuple(f"{t}_{p}" for t in SOURCE_TYPES for p in snd.PATTERNS)


def events_clip(rng: np.random.Generator, label: int, seconds: float) -> np.ndarray:
    """A source of one type (kind within the type random) sounding in one temporal pattern."""
    kind, pattern = divmod(label, len(snd.PATTERNS))
    src = new_source(rng, str(rng.choice(list(SOURCE_TYPES.values())[kind])))
    return finish(rng, render_pattern(rng, src, snd.PATTERNS[pattern], n_samples(seconds)), snr_db=(10, 35),
                  textured_background=0.25)


# --- language (VoxLingua): phonology, rhythm and pitch habit


@dataclass(frozen=True)
class Language:
    vowels: tuple[str, ...]
    consonants: tuple[str, ...]
    templates: tuple[str, ...]  # syllable shapes, e.g. "CV", "CVC", "CCV", "V"
    syllable_s: float  # mean syllable duration
    stress_ratio: float  # > 1: long/short alternation (stress-timed); 1: syllable-timed
    tonal: bool  # lexical tones (per-syllable contours) vs phrase intonation
    f0_range: float  # octaves
    formant_shift: float  # accent: a small shift of every formant, on top of the speaker's


def _make_languages() -> tuple[Language, ...]:
    """Ten languages drawn once from a fixed seed (not the dataset seed): a label means the same
    language in every generated suite. Inventories overlap heavily, as real ones do."""
    rng = np.random.default_rng(np.random.SeedSequence(20240601))
    vowels, consonants = tuple(snd.VOWELS), tuple(snd.CONSONANTS)
    shapes = ("V", "CV", "CVC", "CCV", "CCVC", "VC")
    langs = []
    for i in range(10):
        w = rng.dirichlet(np.ones(len(shapes)) * 0.7)
        langs.append(Language(
            vowels=tuple(sorted(rng.choice(vowels, size=int(rng.integers(4, 8)), replace=False))),
            consonants=tuple(sorted(rng.choice(consonants, size=int(rng.integers(7, 13)), replace=False))),
            templates=tuple(rng.choice(shapes, size=20, p=w)),
            syllable_s=rng.uniform(0.15, 0.25), stress_ratio=float(rng.choice([1.0, rng.uniform(1.3, 1.8)])),
            tonal=bool(i % 3 == 0), f0_range=rng.uniform(0.1, 0.4),
            formant_shift=rng.uniform(0.95, 1.05)))
    return tuple(langs)


LANGUAGES = _make_languages()
LANGUAGE_NAMES = tuple(f"lang{i}" for i in range(len(LANGUAGES)))


def language_clip(rng: np.random.Generator, lang: int, seconds: float) -> np.ndarray:
    """A random speaker speaks random syllables of language `lang` with its rhythm and pitch habit."""
    L = LANGUAGES[lang]
    speaker = snd.random_speaker(rng)
    speaker = replace(speaker, formant_scale=speaker.formant_scale * L.formant_shift)
    n = n_samples(seconds)
    rate = rng.uniform(0.85, 1.15)
    segs: list[Segment] = []
    total, i, f0 = 0.0, 0, 1.0
    while total < seconds:
        shape = str(rng.choice(L.templates))
        onset = "".join(rng.choice(L.consonants, size=shape.split("V")[0].count("C")))
        coda = "".join(rng.choice(L.consonants, size=shape.split("V")[1].count("C")))
        dur = L.syllable_s / rate * (L.stress_ratio if i % 2 == 0 else 1.0) * rng.uniform(0.8, 1.2)
        if L.tonal:
            f_start, f_end = 2 ** (L.f0_range * rng.choice([-0.5, 0.5], size=2))  # high/low/rising/falling
        else:
            f_start, f_end = f0, f0 * 2 ** (-L.f0_range * 0.15 + 0.1 * L.f0_range * rng.standard_normal())
        new = snd.syllable_segments(rng, onset, str(rng.choice(L.vowels)), coda, dur, f_start, f_end)
        if rng.uniform() < 0.08:
            new.append(Segment("_", rng.uniform(0.1, 0.3)))
            f_end = 2 ** (L.f0_range * rng.uniform(0, 0.5))  # intonation resets after a pause
        segs += new
        total += sum(s.dur for s in new)
        f0, i = f_end, i + 1
    x = _fit(snd.voice(rng, speaker, segs), n)
    return finish(rng, x, snr_db=(10, 35))


# --- pretraining corpus: scenes from the same world


def pretrain_clip(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """A scene of 1-3 sources, each in a random pattern, often with speech, over a background."""
    n = n_samples(seconds)
    mix = np.zeros(n)
    count = int(rng.integers(1, 4))
    for name in rng.choice(SOURCES, size=count, replace=False):
        x = render_pattern(rng, new_source(rng, str(name)), str(rng.choice(snd.PATTERNS)), n)
        mix += snd.db_to_gain(rng.uniform(-8, 4)) * normalise(x)
    if rng.uniform() < 0.35:
        mix += snd.db_to_gain(rng.uniform(-6, 3)) * speech(rng, snd.random_speaker(rng), n, rng.uniform(0.8, 1.2))
    return finish(rng, mix, snr_db=(5, 35))
