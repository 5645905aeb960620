"""The generator's default training settings, importable without torch (the CLI reads them for its help).

The defaults are the method's recipe ("Inverting Facial Recognition Models", 2019)
except where a measured comparison says otherwise (each value says which).
"""

from __future__ import annotations

DEFAULT_EPOCHS = 150
#: The method's batch size.
DEFAULT_BATCH_SIZE = 300
#: A bigger batch for a GPU, where 300 leaves most of the chip idle.  The
#: learning rate is not scaled with it: pass ``lr`` as well if you change it.
LARGE_BATCH_SIZE = 1000
#: Adam at the method's learning rate (PyTorch's default, 1e-3) with DCGAN's beta1 = 0.5.
#: Measured with benchmarks/inversion_variants.py on LFW (10,378 training images, 1,000
#: held-out people, 128 channels, 10 epochs, CPU): DCGAN's whole setting (lr 2e-4) matched
#: 43.0% at 0.6 against 49.6% for the method's; beta1 0.5 instead of 0.9 matched 51.3% (58.0%
#: against 57.5% with the noise below), and on the UTKFace quick start (batch 64) 55.5% of the
#: audit set against 46.5%.
DEFAULT_LR = 1e-3
DEFAULT_BETAS = (0.5, 0.999)
#: Standard deviation of the Gaussian noise added to training embeddings, in
#: the embedding's own units (a dlib vector has norm about 1, so 0.01 is about
#: 1% of its length and a few percent of the 0.6 threshold): a regulariser
#: that teaches the generator that nearby embeddings are the same face.  The
#: method used 1e-4; 0.01 matched 57.5% of the same 1,000 people against 49.6%
#: (same benchmark), with fewer reconstructions where no face is found (1.9% against 5.2%).
DEFAULT_NOISE_STD = 0.01
DEFAULT_VALIDATE_EVERY = 5
DEFAULT_DEVICE = "auto"
#: Reconstructions embedded per call of ``embed_fn`` and generated per forward pass.
DEFAULT_EVAL_BATCH_SIZE = 500
DEFAULT_IMAGE_SIZE = 64
DEFAULT_BASE_CHANNELS = 512
#: The most channels the generator's first map may have (8x the method's): the network's
#: projection already holds 4*4*C weights per embedding dimension, 8 million at dlib's 128.
MAX_BASE_CHANNELS = 4096
#: The most weights the generator's projection (embedding -> 4x4 map) may hold: 4 GiB of
#: float32, far past any network this tool trains, so that a damaged checkpoint asking for
#: more is refused instead of exhausting the machine's memory.
MAX_PROJECTION_WEIGHTS = 2 ** 30
#: The largest seed any command takes (``--seed``), and any seed the tool derives from it
#: (``seed + k`` for the k-th generator, small offsets per fold) stays far below torch's
#: 64-bit limit; 32 bits is what numpy's legacy generator and scikit-learn accept.
MAX_SEED = 2 ** 32 - 1
