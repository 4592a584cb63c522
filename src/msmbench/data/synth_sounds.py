"""Sound primitives of the synthetic sound world: voice, tone, strike, texture, signal, rhythm, room.

Pure numpy/scipy functions at 16 kHz (float64, with float32 where precision does not matter). Every
random choice comes from the `rng` passed in (one `np.random.Generator` per clip), so a clip depends
only on its own seed. Nothing here uses threads, BLAS products or set iteration order (see synth.py on
what byte-identical output rests on).

Speed matters (the whole suite must generate in seconds on 2 cores): fixed filters are IIR (scipy
lfilter, C loops) with coefficients by formula; the time-varying vocal tract is a block-wise FFT
filter (one batch of FFTs per utterance, no Python loop over phones); damped modes come from complex
power tables; repeated events reuse renderings; white noise comes from uniform draws.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve, lfilter

SR = 16000
NYQUIST_MARGIN = 7600.0  # highest partial we synthesise: keeps aliasing out of the 8 kHz mel range

# ----------------------------------------------------------------------------------------------
# Small helpers


def n_samples(seconds: float) -> int:
    return max(1, int(round(seconds * SR)))


def db_to_gain(db: float | np.ndarray) -> float | np.ndarray:
    return 10.0 ** (np.asarray(db) / 20.0)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)) + 1e-20))


def normalise(x: np.ndarray) -> np.ndarray:
    """Unit RMS (silence stays silence)."""
    r = rms(x)
    return x / r if r > 1e-9 else x


def white_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance white noise, float32, from uniform draws: four times faster than Gaussian draws,
    and indistinguishable once filtered or seen through a spectrogram."""
    return (rng.random(n, dtype=np.float32) - np.float32(0.5)) * np.float32(np.sqrt(12.0))


def place(out: np.ndarray, x: np.ndarray, start: int, gain: float = 1.0) -> None:
    """Add `x * gain` into `out` starting at sample `start`, cutting what falls outside."""
    lo, hi = max(start, 0), min(start + len(x), len(out))
    if hi > lo:
        out[lo:hi] += gain * x[lo - start:hi - start]


def smooth_random(rng: np.random.Generator, n: int, rate_hz: float) -> np.ndarray:
    """A slowly varying random curve: N(0, 1) knots about `rate_hz` apart, linearly interpolated, (n,)."""
    step = max(1, int(round(SR / rate_hz)))
    knots = rng.standard_normal(n // step + 2)
    ramp = np.tile(np.arange(step) / step, n // step + 1)[:n]
    return np.repeat(knots[:-1], step)[:n] + np.repeat(np.diff(knots), step)[:n] * ramp


def fade(x: np.ndarray, seconds: float = 0.005) -> np.ndarray:
    """Short linear fade in and out: no clicks where an event starts or is cut."""
    k = min(len(x) // 2, n_samples(seconds))
    if k > 1:
        ramp = np.linspace(0.0, 1.0, k)
        x = x.copy()
        x[:k] *= ramp
        x[-k:] *= ramp[::-1]
    return x


def envelope(n: int, attack: float, decay: float, sustain: float, release: float) -> np.ndarray:
    """Attack (linear, s), exponential decay towards `sustain` (time constant `decay` s), release at the end."""
    t = np.arange(n) / SR
    env = sustain + (1.0 - sustain) * np.exp(-np.maximum(t - attack, 0.0) / max(decay, 1e-3))
    env *= np.minimum(1.0, t / max(attack, 1e-4))
    tail = (n - np.arange(n)) / SR
    return env * np.minimum(1.0, tail / max(release, 1e-4))


# ----------------------------------------------------------------------------------------------
# Filters (coefficients by formula: designing with scipy per clip would cost more than filtering)


def resonator_sos(freqs: np.ndarray, bws: np.ndarray) -> np.ndarray:
    """Klatt resonators (unity gain at DC) as second-order sections, (len(freqs), 6)."""
    freqs = np.minimum(np.asarray(freqs, dtype=np.float64), 0.45 * SR)
    r = np.exp(-np.pi * np.asarray(bws, dtype=np.float64) / SR)
    b1 = 2.0 * r * np.cos(2.0 * np.pi * freqs / SR)
    c = -r * r
    sos = np.zeros((len(freqs), 6))
    sos[:, 0] = 1.0 - b1 - c
    sos[:, 3], sos[:, 4], sos[:, 5] = 1.0, -b1, -c
    return sos


def bandpass(x: np.ndarray, freq: float, bw: float) -> np.ndarray:
    """Two-pole band-pass with zeros at DC and Nyquist, about unit gain at `freq`."""
    freq = min(freq, 0.45 * SR)
    r = np.exp(-np.pi * bw / SR)
    g = (1.0 - r * r) / 2.0
    return lfilter([g, 0.0, -g], [1.0, -2.0 * r * np.cos(2.0 * np.pi * freq / SR), r * r], x)


def one_pole_lowpass(x: np.ndarray, cutoff: float) -> np.ndarray:
    p = np.exp(-2.0 * np.pi * cutoff / SR)
    return lfilter([1.0 - p], [1.0, -p], x)


# Pink (1/f) noise filter of J. O. Smith's "Spectral Audio Signal Processing" (pole/zero fit).
_PINK_B = [0.049922035, -0.095993537, 0.050612699, -0.004408786]
_PINK_A = [1.0, -2.494956002, 2.017265875, -0.522189400]


def coloured_noise(rng: np.random.Generator, n: int, colour: str) -> np.ndarray:
    """Unit-RMS noise: white, pink (-3 dB/oct) or brown (-6 dB/oct above ~25 Hz)."""
    white = white_noise(rng, n)
    if colour == "white":
        return white
    if colour == "pink":
        return normalise(lfilter(_PINK_B, _PINK_A, white))
    if colour == "brown":
        return normalise(lfilter([1.0], [1.0, -0.99], white))
    raise ValueError(f"unknown noise colour {colour!r}")


# ----------------------------------------------------------------------------------------------
# Tone: harmonic partials with a timbre


@dataclass(frozen=True)
class Timbre:
    tilt_db: float  # spectral slope in dB per octave of harmonic number
    even_db: float  # level of even harmonics relative to odd ones (clarinet-like when very negative)
    formant_hz: float  # a body resonance
    formant_db: float
    attack: float  # s
    decay: float  # s, time constant towards sustain
    sustain: float  # 0..1
    vibrato_hz: float
    vibrato_cents: float
    breath: float  # noise share, 0..1
    detune_cents: float  # a second, detuned oscillator (chorus); 0 = none


def random_timbre(rng: np.random.Generator) -> Timbre:
    return Timbre(tilt_db=rng.uniform(-14, -2), even_db=rng.uniform(-20, 3),
                  formant_hz=float(np.exp(rng.uniform(np.log(400), np.log(4000)))), formant_db=rng.uniform(0, 15),
                  attack=rng.uniform(0.003, 0.15), decay=rng.uniform(0.1, 1.5), sustain=rng.uniform(0, 0.8),
                  vibrato_hz=rng.uniform(4, 7), vibrato_cents=rng.choice([0.0, rng.uniform(5, 30)]),
                  breath=rng.choice([0.0, rng.uniform(0.01, 0.15)]), detune_cents=rng.choice([0.0, rng.uniform(3, 15)]))


def harmonic_amplitudes(f0: float, timbre: Timbre) -> np.ndarray:
    """Amplitudes of harmonics 1..K with K * f0 below the aliasing margin, (K,)."""
    k = np.arange(1, max(1, int(NYQUIST_MARGIN // f0)) + 1, dtype=np.float64)
    level = timbre.tilt_db * np.log2(k) + np.where(k % 2 == 0, timbre.even_db, 0.0)
    level += timbre.formant_db * np.exp(-0.5 * (np.log2(k * f0 / timbre.formant_hz) / 0.5) ** 2)
    return db_to_gain(level)


def wavetable(amplitudes: np.ndarray, phases: np.ndarray, size: int = 2048) -> np.ndarray:
    """One period of sum_k a_k sin(2 pi k x + phi_k) on `size` points, plus a wrap-around point."""
    spectrum = np.zeros(size // 2 + 1, dtype=np.complex128)
    k = np.arange(1, min(len(amplitudes), size // 2 - 1) + 1)
    spectrum[k] = amplitudes[:len(k)] * np.exp(1j * (phases[:len(k)] - np.pi / 2)) * (size / 2)
    table = np.fft.irfft(spectrum, n=size)
    return np.append(table, table[0])


def read_wavetable(table: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    """Linear-interpolated lookup at phase `cycles` (in periods, any real value)."""
    size = len(table) - 1
    pos = (cycles - np.floor(cycles)) * size
    i = np.minimum(pos.astype(np.int64), size - 1)
    w = pos - i
    return table[i] + w * (table[i + 1] - table[i])


def tone(rng: np.random.Generator, f0: float, n: int, timbre: Timbre, glide_cents: float = 0.0) -> np.ndarray:
    """A harmonic tone at f0 Hz (optionally gliding by `glide_cents` over its length), unit RMS."""
    t = np.arange(n) / SR
    cents = glide_cents * t / max(t[-1], 1e-9)
    if timbre.vibrato_cents:
        cents = cents + timbre.vibrato_cents * np.sin(2 * np.pi * timbre.vibrato_hz * t + rng.uniform(0, 2 * np.pi))
    freq = f0 * 2.0 ** (cents / 1200.0)
    amps = harmonic_amplitudes(float(freq.max()), timbre)
    table = wavetable(amps, rng.uniform(0, 2 * np.pi, len(amps)))
    cycles = np.cumsum(freq) / SR + rng.uniform()
    x = read_wavetable(table, cycles)
    if timbre.detune_cents:
        x = x + read_wavetable(table, cycles * 2.0 ** (timbre.detune_cents / 1200.0) + rng.uniform())
    x = normalise(x)
    if timbre.breath:
        x = x + timbre.breath * 3.0 * normalise(bandpass(white_noise(rng, n), min(f0 * 3, 6000), f0 * 4))
    return normalise(x * envelope(n, timbre.attack, timbre.decay, timbre.sustain, 0.02))


# ----------------------------------------------------------------------------------------------
# Strike: modal synthesis


# Mode frequency ratios: ideal circular membrane (Bessel zeros j_mn / j_01), free-free bar
# (Euler-Bernoulli: 1, 2.756, 5.404, ...), square plate ((m^2 + n^2) / 2 for m, n >= 1), a
# gong-like near-harmonic shell, and the harmonic-ish loaded drum head of the mridangam.
STRIKE_RATIOS = {
    "membrane": [1.0, 1.594, 2.136, 2.296, 2.653, 2.918, 3.156, 3.501, 3.600, 3.652],
    "bar": [1.0, 2.756, 5.404, 8.933, 13.344, 18.64],
    "plate": [1.0, 2.5, 4.0, 5.0, 6.5, 8.5, 9.0, 10.0, 12.5, 13.0, 14.5, 16.0, 17.0],
    "gong": [1.0, 1.51, 2.02, 2.48, 3.01, 3.53, 4.07, 4.49],
    "harmonic": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
}


@dataclass(frozen=True)
class Strike:
    ratios: tuple[float, ...]
    f0: float  # fundamental (Hz)
    decay: float  # s, time constant of the fundamental
    damping_slope: float  # higher modes decay as decay / ratio**slope
    hardness: float  # > 0; mode weights fall as exp(-(ratio - 1) / hardness)
    noise: float  # share of the strike-noise transient
    noise_hz: float  # centre of the transient
    glide: float  # relative pitch change at the attack, decays away (gongs, slaps); 0 = none
    weights: tuple[float, ...] | None = None  # explicit mode weights (mridangam strokes)


def random_strike(rng: np.random.Generator, family: str) -> Strike:
    """A strike of one family with random size (f0), damping and hardness."""
    f0_lo, f0_hi, decay_lo, decay_hi, noise_lo, noise_hi = {
        "membrane": (60, 300, 0.04, 0.3, 0.2, 0.6),
        "bar": (200, 1200, 0.15, 0.8, 0.02, 0.2),
        "plate": (150, 900, 0.3, 1.2, 0.05, 0.4),
        "gong": (90, 500, 0.4, 1.5, 0.02, 0.2),
    }[family]
    glide = rng.uniform(0.03, 0.12) * rng.choice([-1.0, 1.0]) if family == "gong" else 0.0
    return Strike(ratios=tuple(STRIKE_RATIOS[family]), f0=float(np.exp(rng.uniform(np.log(f0_lo), np.log(f0_hi)))),
                  decay=rng.uniform(decay_lo, decay_hi), damping_slope=rng.uniform(0.3, 1.2),
                  hardness=rng.uniform(1.0, 8.0), noise=rng.uniform(noise_lo, noise_hi),
                  noise_hz=rng.uniform(800, 5000), glide=glide)


def strike(rng: np.random.Generator, s: Strike, n: int) -> np.ndarray:
    """Sum of damped sinusoids at f0 * ratios plus a noise transient; unit peak, (n,).

    Mode weights fall with frequency (mallet hardness) and higher modes decay faster. A pitch glide
    bends all modes together by reading the strike on a warped time axis.
    """
    ratios = np.asarray(s.ratios)
    keep = ratios * s.f0 * (1 + abs(s.glide)) < NYQUIST_MARGIN
    ratios = ratios[keep]
    weights = np.exp(-(ratios - 1.0) / s.hardness) if s.weights is None else np.asarray(s.weights)[keep]
    taus = s.decay / ratios ** s.damping_slope
    out = np.zeros(n)
    for ratio, weight, tau in zip(ratios, weights * rng.uniform(0.6, 1.4, len(ratios)), taus):
        if weight > 1e-4:
            length = min(n, n_samples(tau * 5.0))  # exp(-5) ~ -43 dB: below the noise floor of every clip
            out[:length] += weight * _damped_sine(ratio * s.f0 * rng.uniform(0.995, 1.005), tau, length)
    if s.glide:
        t = np.arange(n) / SR
        out = np.interp(t + s.glide * 0.05 * (1.0 - np.exp(-t / 0.05)), t, out)  # glide decays in ~50 ms
    if s.noise:
        k = min(n, n_samples(rng.uniform(0.01, 0.04)))
        burst = bandpass(rng.standard_normal(k), s.noise_hz, s.noise_hz) * np.exp(-np.arange(k) / (k / 4))
        out[:k] += s.noise * 4.0 * burst * (np.abs(out).max() + 1e-9) / (np.abs(burst).max() + 1e-9)
    return out / (np.abs(out).max() + 1e-12)


def _damped_sine(freq: float, tau: float, n: int, block: int = 256) -> np.ndarray:
    """exp(-t / tau) * sin(2 pi freq t), (n,): Im(z^k) with z^k = z^(block * j) * z^i for k = block * j + i,
    two short power tables and one outer product instead of a sine per sample."""
    z = np.exp(-1.0 / (tau * SR) + 2j * np.pi * freq / SR)
    rows = -(-n // block)
    return np.outer(z ** (block * np.arange(rows)), z ** np.arange(block)).imag.ravel()[:n]


# ----------------------------------------------------------------------------------------------
# Voice: pulse source, time-varying formant filter, noise consonants

# Vowel formants F1-F3 (Hz) of an adult male voice (Peterson & Barney 1952, Hillenbrand et al. 1995
# averages, rounded), plus a few rounded/central vowels.
VOWELS = {
    "i": (280, 2250, 2890), "I": (400, 1920, 2560), "e": (420, 2100, 2700), "E": (550, 1770, 2490),
    "a": (730, 1090, 2440), "A": (750, 940, 2540), "O": (570, 840, 2410), "o": (450, 800, 2400),
    "u": (300, 870, 2240), "U": (440, 1020, 2240), "V": (640, 1190, 2390), "y": (280, 1800, 2200),
    "2": (400, 1600, 2300), "1": (320, 1500, 2400),
}
# Consonants: (kind, noise centre Hz, noise bandwidth Hz, voiced). kind: F fricative, P plosive,
# N nasal (formants), L liquid/glide (formants).
CONSONANTS = {
    "s": ("F", 5500, 2500, False), "S": ("F", 3000, 1500, False), "f": ("F", 4500, 5000, False),
    "x": ("F", 1600, 900, False), "h": ("F", 1200, 3000, False), "z": ("F", 5000, 2500, True),
    "v": ("F", 4000, 4000, True), "p": ("P", 900, 1200, False), "t": ("P", 4000, 3000, False),
    "k": ("P", 1900, 1200, False), "b": ("P", 900, 1200, True), "d": ("P", 3500, 3000, True),
    "g": ("P", 1700, 1200, True), "m": ("N", 1000, 0, True), "n": ("N", 1500, 0, True),
    "N": ("N", 2000, 0, True), "l": ("L", 1300, 0, True), "r": ("L", 1150, 0, True),
    "w": ("L", 700, 0, True), "j": ("L", 2100, 0, True),
}
_LIQUID_FORMANTS = {"l": (360, 1300, 2700), "r": (420, 1150, 1650), "w": (300, 700, 2200), "j": (280, 2100, 2900)}


@dataclass(frozen=True)
class Speaker:
    f0: float  # Hz, habitual pitch
    formant_scale: float  # vocal tract length factor (1 = adult male)
    breathiness: float  # aspiration noise share
    glottal_pole: float  # glottal low-pass pole: higher = darker voice
    jitter: float  # relative random f0 variation
    shimmer: float  # relative random pulse amplitude variation


def random_speaker(rng: np.random.Generator, kind: str | None = None) -> Speaker:
    """A random speaker; kind "low" (male-like), "high" (female/child-like) or None (either)."""
    kind = kind or ("low" if rng.uniform() < 0.5 else "high")
    f0 = rng.uniform(85, 150) if kind == "low" else rng.uniform(165, 300)
    scale = rng.uniform(0.92, 1.05) if kind == "low" else rng.uniform(1.08, 1.25)
    return Speaker(f0=f0, formant_scale=scale, breathiness=rng.uniform(0.0, 0.25),
                   glottal_pole=rng.uniform(0.90, 0.97), jitter=rng.uniform(0.005, 0.02),
                   shimmer=rng.uniform(0.02, 0.1))


@dataclass(frozen=True)
class Segment:
    """One phone: `sym` from VOWELS or CONSONANTS (or "_" for a pause), its duration in s, its f0 as
    multiples of the speaker's f0 at start and end, and a gain."""

    sym: str
    dur: float
    f0_start: float = 1.0
    f0_end: float = 1.0
    gain: float = 1.0


def voice(rng: np.random.Generator, speaker: Speaker, segments: list[Segment], whisper: bool = False) -> np.ndarray:
    """Synthesise an utterance; unit RMS, (sum of durations * SR,).

    Source-filter model: a glottal pulse train (plus aspiration noise) through a vocal tract whose
    formants glide between phone targets, and frication/burst noise through a per-consonant band.
    """
    phones = _phone_table(segments)
    n = int(phones.bounds[-1])
    pulses = np.zeros(n, dtype=np.float32) if whisper else _pulses(rng, speaker, segments, phones, n)
    step = np.repeat(_voicing_levels(phones), np.diff(phones.bounds))
    aspiration = (speaker.breathiness + (1.0 if whisper else 0.0)) * 0.3
    breath = aspiration * white_noise(rng, n) * np.maximum(step, 0.05)
    out = _vocal_tract(pulses, breath, _frication(rng, phones, n), phones, speaker)
    return normalise(out)


@dataclass(frozen=True)
class _Phones:
    """Per-phone arrays of an utterance (index p = phone p)."""

    bounds: np.ndarray  # (P + 1,) sample boundaries
    kind: np.ndarray  # (P,) "V" vowel, "L" liquid, "N" nasal, "F" fricative, "P" plosive, "S" pause
    gain: np.ndarray  # (P,)
    voiced: np.ndarray  # (P,) bool
    formants: np.ndarray  # (P, 3) Hz, NaN for phones without formants (obstruents, pauses)
    noise_row: np.ndarray  # (P,) row of the consonant noise table, carried forward from the last obstruent


def _phone_table(segments: list[Segment]) -> _Phones:
    lengths = np.array([n_samples(s.dur) for s in segments])
    kinds, voiced, formants, rows = [], [], [], []
    row = 0
    for seg in segments:
        kind = "V" if seg.sym in VOWELS else "S" if seg.sym == "_" else CONSONANTS[seg.sym][0]
        kinds.append(kind)
        voiced.append(kind in "VLN" or (kind in "FP" and CONSONANTS[seg.sym][3]))
        formants.append(VOWELS.get(seg.sym) or _LIQUID_FORMANTS.get(seg.sym)
                        or ((250.0, CONSONANTS[seg.sym][1], 2500.0) if kind == "N" else (np.nan,) * 3))
        row = _CONSONANT_ROWS[seg.sym] if kind in "FP" else row
        rows.append(row)
    return _Phones(np.concatenate([[0], np.cumsum(lengths)]), np.array(kinds), np.array([s.gain for s in segments]),
                   np.array(voiced), np.array(formants, dtype=np.float64), np.array(rows))


def _voicing_levels(phones: _Phones) -> np.ndarray:
    """Amplitude of the voiced source in each phone, (P,)."""
    level = {"V": 1.0, "L": 0.7, "N": 0.5, "F": 0.25, "P": 0.08, "S": 0.0}
    return np.array([level[k] for k in phones.kind]) * phones.voiced * phones.gain


def _frication(rng: np.random.Generator, phones: _Phones, n: int) -> np.ndarray:
    """Noise of the obstruents, zero elsewhere. Fricatives: noise over the whole phone, ramped in and
    out. Plosives: a silent closure (60 % of the phone), then a burst decaying over the rest."""
    out = np.zeros(n)
    for p in np.flatnonzero((phones.kind == "F") | (phones.kind == "P")):
        lo, hi = phones.bounds[p], phones.bounds[p + 1]
        if phones.kind[p] == "F":
            env = 0.35 * np.sqrt(np.sin(np.pi * (np.arange(hi - lo) + 0.5) / (hi - lo)))
        else:
            closure = int(0.6 * (hi - lo))
            env = np.zeros(hi - lo)
            env[closure:] = 0.8 * np.exp(-np.arange(hi - lo - closure) / max(1.0, (hi - lo - closure) / 5))
        out[lo:hi] = phones.gain[p] * env * white_noise(rng, hi - lo)
    return out


_HOP = 16  # f0 and voicing are computed on a 1 kHz grid; only the pulses are placed per sample


def _pulses(rng, speaker: Speaker, segments: list[Segment], phones: _Phones, n: int) -> np.ndarray:
    """Glottal excitation: one impulse per period of the f0 contour (with jitter and shimmer), its
    amplitude following the voicing of the phones (8 ms transitions) and scaled by sqrt(period) so
    that the filtered voice has about unit RMS where fully voiced, whatever its f0."""
    bounds = phones.bounds
    tc = np.arange(0, n + _HOP, _HOP, dtype=np.float64)
    knots_t = np.stack([bounds[:-1], bounds[1:] - 1], axis=1).ravel().astype(np.float64)
    knots_f = np.array([[s.f0_start, s.f0_end] for s in segments]).ravel() * speaker.f0
    n_jit = int(n * 60.0 / SR) + 3  # jitter: a random walk of the log f0 at 60 Hz
    jitter = np.interp(tc * (60.0 / SR), np.arange(n_jit), rng.standard_normal(n_jit))
    f0 = np.interp(tc, knots_t, knots_f) * np.exp(speaker.jitter * jitter)
    cycles = np.concatenate([[0.0], np.cumsum(f0[:-1])]) * (_HOP / SR) + rng.uniform()
    pulse_at = np.interp(np.arange(np.ceil(cycles[0]), np.floor(cycles[-1]) + 1), cycles, tc)  # f0 > 0: monotone
    idx = np.rint(pulse_at).astype(np.int64)
    idx = idx[idx < n]
    level = _voicing_levels(phones)[np.searchsorted(bounds, tc, side="right").clip(1, len(bounds) - 1) - 1]
    level = np.convolve(level, np.ones(8) / 8, mode="same")
    period = SR / np.interp(idx, tc, f0)
    pulses = np.zeros(n, dtype=np.float32)
    pulses[idx] = np.interp(idx, tc, level) * np.sqrt(period) * (1.0 + speaker.shimmer * rng.standard_normal(len(idx)))
    return pulses


def _glottal_response(pole: float) -> np.ndarray:
    """Glottal low-pass (double pole) times lip radiation (first difference) at the FFT bins,
    normalised to unit energy (Parseval), (bins,)."""
    e1, e2 = _bins()
    g = (1 - pole) ** 2 * (1 - e1) / (1 - 2 * pole * e1 + pole * pole * e2)
    energy = (np.sum(np.abs(g) ** 2) * 2 - np.abs(g[0]) ** 2 - np.abs(g[-1]) ** 2) / _NFFT
    return (g / np.sqrt(energy)).astype(np.complex64)


# Time-varying filtering by blocks: each 16 ms block of the input is convolved (by FFT, 512 points,
# so the 16 ms of ringing after a block fits) with the filter of its own moment, and the results are
# overlap-added. That is an exact time-varying linear filter whose response switches every block,
# and it costs a few FFTs per utterance instead of one IIR call per phone.
_BLOCK, _NFFT, _GRID_HZ = 256, 512, 10.0
_FORMANT_BW = (80.0, 100.0, 160.0, 250.0)
_F4_HZ = 3500.0
_NOISE_CONSONANTS = tuple(c for c, v in CONSONANTS.items() if v[0] in "FP")
_CONSONANT_ROWS = {c: i for i, c in enumerate(_NOISE_CONSONANTS)}


def _bins() -> tuple[np.ndarray, np.ndarray]:
    w = 2 * np.pi * np.arange(_NFFT // 2 + 1) / _NFFT
    return np.exp(-1j * w), np.exp(-2j * w)


def _resonator_response(freqs: np.ndarray, bw: float) -> np.ndarray:
    """Complex response at the FFT bins of Klatt resonators at `freqs` (unity DC gain), (F, bins)."""
    e1, e2 = _bins()
    sos = resonator_sos(freqs, np.full(len(freqs), bw))
    return sos[:, :1] / (1.0 + sos[:, 4:5] * e1 + sos[:, 5:6] * e2)


@functools.lru_cache(maxsize=1)
def _formant_tables() -> np.ndarray:
    """Responses of one resonator per formant slot on a 10 Hz grid of centre frequencies, (4, 800, bins)."""
    grid = np.arange(int(SR / 2 / _GRID_HZ)) * _GRID_HZ
    return np.stack([_resonator_response(grid, bw) for bw in _FORMANT_BW]).astype(np.complex64)


@functools.lru_cache(maxsize=1)
def _noise_table() -> np.ndarray:
    """Band-pass response of each noise consonant (zeros at DC and Nyquist), (consonants, bins)."""
    e1, e2 = _bins()
    rows = []
    for c in _NOISE_CONSONANTS:
        _, centre, bw, _ = CONSONANTS[c]
        r = np.exp(-np.pi * bw / SR)
        g = (1 - r * r) / 2
        rows.append(g * (1 - e2) / (1 - 2 * r * np.cos(2 * np.pi * min(centre, 0.45 * SR) / SR) * e1 + r * r * e2))
    return np.array(rows).astype(np.complex64)


def _vocal_tract(pulses: np.ndarray, breath: np.ndarray, frication: np.ndarray, phones: _Phones,
                 speaker: Speaker) -> np.ndarray:
    """(pulses * glottis + breath) through the formants of each block, plus frication through the
    band of the current consonant, overlap-added, (n,)."""
    n = len(pulses)
    blocks = -(-n // _BLOCK)
    centres = np.minimum(np.arange(blocks) * _BLOCK + _BLOCK // 2, n - 1)
    pid = np.searchsorted(phones.bounds, centres, side="right") - 1
    scale = speaker.formant_scale
    formants = np.column_stack([_block_formants(phones, centres), np.full(blocks, _F4_HZ)]) * scale
    t = _formant_tables()
    idx = np.clip(np.rint(formants / _GRID_HZ), 1, t.shape[1] - 1).astype(np.int64)
    tract = t[0, idx[:, 0]] * t[1, idx[:, 1]] * t[2, idx[:, 2]] * t[3, idx[:, 3]]
    tract[phones.kind[pid] == "N"] *= _NASAL_TILT
    source = _block_fft(pulses, blocks) * _glottal_response(speaker.glottal_pole) + _block_fft(breath, blocks)
    spec = source * tract + _block_fft(frication, blocks) * _noise_table()[phones.noise_row[pid]]
    y = np.fft.irfft(spec, n=_NFFT, axis=1)
    out = np.zeros((blocks + 1) * _BLOCK)
    out[: blocks * _BLOCK] += y[:, :_BLOCK].ravel()
    out[_BLOCK:] += y[:, _BLOCK:].ravel()
    return out[:n]


def _block_fft(x: np.ndarray, blocks: int) -> np.ndarray:
    """(blocks, bins) spectra of consecutive 256-sample blocks zero-padded to 512, in single precision."""
    padded = np.zeros((blocks, _NFFT), dtype=np.float32)
    padded[:, :_BLOCK] = np.pad(x, (0, blocks * _BLOCK - len(x))).reshape(blocks, _BLOCK)
    return np.fft.rfft(padded, axis=1)


def _block_formants(phones: _Phones, centres: np.ndarray) -> np.ndarray:
    """F1-F3 at each block centre: each formant-bearing phone holds its target over its middle, and
    the tract glides between targets (through obstruents and pauses), (blocks, 3)."""
    has = ~np.isnan(phones.formants[:, 0])
    if not has.any():
        return np.tile(np.array(VOWELS["V"], dtype=np.float64), (len(centres), 1))
    lo, hi = phones.bounds[:-1][has], phones.bounds[1:][has]
    knots_t = np.column_stack([lo + 0.3 * (hi - lo), lo + 0.8 * (hi - lo)]).ravel()
    knots_f = np.repeat(phones.formants[has], 2, axis=0)
    return np.column_stack([np.interp(centres, knots_t, knots_f[:, k]) for k in range(3)])


_NASAL_TILT = (1.0 / np.sqrt(1.0 + (np.arange(_NFFT // 2 + 1) * SR / _NFFT / 600.0) ** 2)).astype(np.complex64)


def syllable_segments(rng: np.random.Generator, onset: str, vowel: str, coda: str, syl_dur: float,
                      f0_start: float, f0_end: float, gain: float = 1.0) -> list[Segment]:
    """Phones of a (C)(C)V(C) syllable sharing `syl_dur` seconds: consonants short, the vowel the rest."""
    cons = [c for c in onset + coda]
    c_durs = [rng.uniform(0.05, 0.09) * (1.4 if CONSONANTS[c][0] in "FP" else 1.0) for c in cons]
    v_dur = max(0.05, syl_dur - sum(c_durs))
    mid = f0_start + (f0_end - f0_start) * 0.5
    segs = [Segment(c, d, f0_start, f0_start, gain) for c, d in zip(onset, c_durs[:len(onset)])]
    segs.append(Segment(vowel, v_dur, f0_start, f0_end if not coda else mid, gain))
    segs += [Segment(c, d, mid, f0_end, gain) for c, d in zip(coda, c_durs[len(onset):])]
    return segs


# ----------------------------------------------------------------------------------------------
# Textures and signals


def texture(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """Background-like sound of a kind: rain (crackle), wind (gusty bands), engine (AM buzz), hiss."""
    if kind == "rain":
        rate = rng.uniform(300, 3000)
        drops = np.zeros(n)
        at = np.flatnonzero(rng.random(n, dtype=np.float32) < rate / SR)
        drops[at] = rng.exponential(1.0, len(at))
        x = bandpass(drops, rng.uniform(2000, 6000), rng.uniform(1500, 4000)) + 0.1 * coloured_noise(rng, n, "pink")
    elif kind == "wind":
        x = np.zeros(n)
        for _ in range(2):
            gust = np.exp(0.8 * smooth_random(rng, n, rng.uniform(0.5, 3.0)))
            x += gust * bandpass(coloured_noise(rng, n, "pink"), rng.uniform(200, 1500), rng.uniform(100, 600))
    elif kind == "engine":
        rate = rng.uniform(20, 70)
        t = np.arange(n) / SR
        am = (1.0 + np.sin(2 * np.pi * rate * t)) ** 2
        x = one_pole_lowpass(am * coloured_noise(rng, n, "brown"), rng.uniform(300, 1500))
        x = normalise(x) + 0.5 * normalise(bandpass(am, rate * rng.integers(2, 6), 30.0))
    elif kind == "hiss":
        x = coloured_noise(rng, n, "white" if rng.uniform() < 0.5 else "pink")
        x = x - one_pole_lowpass(x, rng.uniform(500, 4000))  # keep the highs
    else:
        raise ValueError(f"unknown texture {kind!r}")
    return normalise(x)


def chirp(rng: np.random.Generator, f_start: float, f_end: float, n: int, harmonics: int = 1) -> np.ndarray:
    """Exponential sweep from f_start to f_end Hz over n samples (optionally with a few harmonics)."""
    t = np.arange(n) / SR
    dur = max(n / SR, 1e-3)
    k = np.log(f_end / f_start) / dur
    cycles = f_start * (np.expm1(k * t) / k if abs(k) > 1e-9 else t)
    phase0 = rng.uniform(0, 2 * np.pi)
    x = sum(np.sin(2 * np.pi * h * cycles + phase0) / h for h in range(1, harmonics + 1)
            if h * max(f_start, f_end) < NYQUIST_MARGIN)
    return normalise(fade(np.asarray(x, dtype=np.float64)))


def siren(rng: np.random.Generator, f_centre: float, n: int) -> np.ndarray:
    """Frequency-modulated tone (slow sinusoidal FM of +-20-40 %)."""
    t = np.arange(n) / SR
    rate, depth = rng.uniform(0.5, 3.0), rng.uniform(0.2, 0.4)
    cycles = f_centre * (t - depth / (2 * np.pi * rate) * np.cos(2 * np.pi * rate * t))
    return normalise(fade(np.sin(2 * np.pi * cycles) + 0.3 * np.sin(4 * np.pi * cycles)))


# ----------------------------------------------------------------------------------------------
# Rhythm: onset patterns

PATTERNS = ("single", "double", "slow", "fast", "accelerating", "decelerating", "bursts", "sustained",
            "crescendo", "triplets")


@dataclass(frozen=True)
class Onset:
    start: float  # s
    dur: float  # s, nominal event length
    gain: float


def pattern_onsets(rng: np.random.Generator, pattern: str, clip_s: float, event_s: float) -> list[Onset]:
    """Event times of a temporal pattern inside a clip of `clip_s` s; `event_s` is the nominal length
    of one short event. The start of the pattern is random (onset time is a nuisance)."""
    if pattern == "sustained":
        dur = clip_s * rng.uniform(0.6, 0.9)
        return [Onset(rng.uniform(0, clip_s - dur), dur, 1.0)]
    if pattern == "single":
        return [Onset(rng.uniform(0, clip_s * 0.6), event_s, 1.0)]
    if pattern == "double":
        gap = rng.uniform(0.15, 0.4)
        t0 = rng.uniform(0, clip_s * 0.5)
        return [Onset(t0, event_s, 1.0), Onset(t0 + gap, event_s, rng.uniform(0.6, 1.0))]
    if pattern == "bursts":
        times = np.sort(rng.uniform(0, clip_s * 0.9, rng.integers(4, 9)))
        return [Onset(t, event_s * rng.uniform(0.3, 0.8), rng.uniform(0.4, 1.0)) for t in times]
    if pattern == "triplets":
        beat = rng.uniform(0.45, 0.7)
        t0 = rng.uniform(0, beat)
        times = [t0 + b * beat + i * beat / 6 for b in range(int(clip_s / beat) + 1) for i in range(3)]
        return [Onset(t, event_s * 0.5, 1.0 if i % 3 == 0 else 0.7) for i, t in enumerate(times) if t < clip_s]
    gaps = _pattern_gaps(rng, pattern, clip_s)
    times = rng.uniform(0, 0.3) + np.concatenate([[0.0], np.cumsum(gaps)])
    times = times[times < clip_s - 0.05]
    gains = np.linspace(0.15, 1.0, len(times)) if pattern == "crescendo" else np.ones(len(times))
    return [Onset(float(t), min(event_s, 0.8 * g if g > 0 else event_s), float(a))
            for t, g, a in zip(times, np.append(gaps, event_s)[:len(times)], gains)]


def _pattern_gaps(rng: np.random.Generator, pattern: str, clip_s: float) -> np.ndarray:
    """Inter-onset intervals (s) of the periodic patterns."""
    count = 40
    if pattern == "slow":
        return np.full(count, rng.uniform(0.5, 0.8))
    if pattern == "fast":
        return np.full(count, rng.uniform(0.11, 0.2))
    if pattern == "crescendo":
        return np.full(count, rng.uniform(0.2, 0.35))
    ratio = rng.uniform(0.8, 0.88)
    if pattern == "accelerating":
        return np.maximum(0.05, rng.uniform(0.5, 0.7) * ratio ** np.arange(count))
    if pattern == "decelerating":
        return np.minimum(1.0, rng.uniform(0.08, 0.12) / ratio ** np.arange(count))
    raise ValueError(f"unknown pattern {pattern!r}")


# ----------------------------------------------------------------------------------------------
# Room and recording chain: the nuisance factors every clip goes through


@dataclass(frozen=True)
class Room:
    """Nuisance factors applied after the sound itself."""

    eq_hz: float  # a microphone/room resonance ...
    eq_db: float  # ... and its gain (negative = notch-like dip)
    tilt: float  # -1..1: darker .. brighter
    reverb_s: float  # decay time (RT60) of a diffuse tail; 0 = dry
    reverb_mix: float
    noise_colour: str
    snr_db: float
    level_db: float  # output RMS in dBFS


def random_room(rng: np.random.Generator, snr_db: tuple[float, float] = (5.0, 30.0)) -> Room:
    return Room(eq_hz=float(np.exp(rng.uniform(np.log(150), np.log(6000)))), eq_db=rng.uniform(-9, 9),
                tilt=rng.uniform(-0.7, 0.7), reverb_s=rng.uniform(0.15, 0.8) if rng.uniform() < 0.4 else 0.0,
                reverb_mix=rng.uniform(0.1, 0.5), noise_colour=str(rng.choice(["white", "pink", "brown"])),
                snr_db=rng.uniform(*snr_db), level_db=rng.uniform(-32, -14))


def record(rng: np.random.Generator, x: np.ndarray, room: Room, background: np.ndarray | None = None) -> np.ndarray:
    """Colour, reverberate, add background noise at `room.snr_db`, set the level, stay within [-1, 1]."""
    x = colour(x, room)
    if room.reverb_s > 0:
        x = reverberate(rng, x, room.reverb_s, room.reverb_mix)
    noise = coloured_noise(rng, len(x), room.noise_colour) if background is None else normalise(background)
    signal_rms = rms(x)
    x = x + (noise * signal_rms * db_to_gain(-room.snr_db) if signal_rms > 1e-9 else noise)
    x = normalise(x) * db_to_gain(room.level_db)
    peak = np.abs(x).max()
    return x * (0.98 / peak) if peak > 0.98 else x


def colour(x: np.ndarray, room: Room) -> np.ndarray:
    """A resonance (or dip) and a broad tilt: the microphone and room's fingerprint, as one IIR filter.

    Resonance: x + (G - 1) * bandpass(x). Tilt around 1 kHz: y + t * (y - lowpass(y)), t in [-0.56, 0.7].
    """
    r = np.exp(-np.pi * room.eq_hz * 0.7 / SR)
    g = (1.0 - r * r) / 2.0 * (db_to_gain(room.eq_db) - 1.0)
    den1 = np.array([1.0, -2.0 * r * np.cos(2.0 * np.pi * room.eq_hz / SR), r * r])
    num1 = den1 + g * np.array([1.0, 0.0, -1.0])
    p = np.exp(-2.0 * np.pi * 1000.0 / SR)
    tilt = room.tilt if room.tilt > 0 else 0.8 * room.tilt
    num2 = (1.0 + tilt) * np.array([1.0, -p]) - tilt * np.array([1.0 - p, 0.0])
    return lfilter(np.convolve(num1, num2), np.convolve(den1, [1.0, -p]), x)


def reverberate(rng: np.random.Generator, x: np.ndarray, rt60: float, mix: float) -> np.ndarray:
    """Convolve with exponentially decaying, slightly low-passed noise (a diffuse late tail)."""
    k = n_samples(rt60)
    tail = one_pole_lowpass(white_noise(rng, k), rng.uniform(2000, 6000)) * np.exp(-6.9 * np.arange(k) / k)
    wet = fftconvolve(x.astype(np.float32), (tail / np.sqrt(np.sum(tail ** 2))).astype(np.float32))[: len(x)]
    return x + mix * wet * (rms(x) / max(rms(wet), 1e-12))
