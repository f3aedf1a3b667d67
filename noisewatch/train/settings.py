"""Training settings and their defaults, in one place: ``train`` uses them, and the command line takes its
defaults from them. No numpy or TensorFlow here, so ``noisewatch --help`` stays instant."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_QUIET = 240
MODEL_FILE = "model.keras"
TRAINING_JSON = "training.json"
FEATURES_NPZ = "train_features.npz"
"""What ``noisewatch train`` writes into ``--out`` and ``noisewatch convert`` reads from it."""


@dataclass(frozen=True)
class ModelSettings:
    """Shape and training of the MLP."""

    hidden: tuple[int, ...] = (750, 750, 750)
    """Units of each hidden Dense layer."""
    dropout: float = 0.5
    """Dropout rate after each hidden layer."""
    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 1e-3
    """Adam step size."""
    class_weight: bool = True
    """Weight classes by inverse frequency in the loss."""
    background_weight: float = 1.0
    """Extra loss weight of the background class: higher trades target recall for fewer false alarms."""
    augment_copies: int = 0
    """Augmented copies (shift, gain, noise) of each training clip, added to the training set."""
    speed_perturb: tuple[float, ...] = ()
    """Playback-rate factors; each adds a copy of every training clip played that much faster (pitch and tempo)."""
    l2: float = 0.0
    """L2 penalty on the hidden Dense kernels."""
    label_smoothing: float = 0.0
    """Mass moved from the true class to the others in the cross-entropy targets."""
    ensemble: int = 1
    """Members trained with seeds seed, seed+1, ...; their softmaxes are averaged inside one model."""
    scene_mix: int = 0
    """Scene-mix windows per clip (an event placed in a quiet 4 s bed, see :mod:`scenemix`)."""
    scene_mix_weight: float = 0.25
    """Loss weight of a scene-mix window relative to an original clip."""
    scene_windows: int = 0
    """Training soundscapes with events per fold (plus a third as many without), cut into labelled windows
    (see :mod:`scenewindows`)."""
    scene_window_weight: float = 1.0
    """Loss weight of a soundscape window relative to an original clip."""
    min_threshold: float = 0.6
    """Lowest per-class threshold the best-F1 choice may take. Below 0.6 the model is unsure between classes;
    with a floor of 0.4 the choice fell to 0.40-0.55 on one fold and let through background the other fold
    calls urban (urban11@2026.11.24.4: held-out background FP 13.6% at floor 0.4, 9.8% at 0.6; docs/model-experiments.md)."""
    seed: int = 0
