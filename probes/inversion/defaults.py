"""The generator's default training settings, importable without torch (the CLI reads them for its help).

The defaults are the method's recipe ("Inverting Facial Recognition Models", 2019)
except where a measured comparison says otherwise (each value says which).
"""

from __future__ import annotations

DEFAULT_EPOCHS = 150
DEFAULT_BATCH_SIZE = 200
#: A bigger batch for a GPU, where 200 leaves most of the chip idle.  The
#: learning rate is not scaled with it: pass ``lr`` as well if you change it.
LARGE_BATCH_SIZE = 1000
#: DCGAN's Adam settings (Radford et al. 2016).
DEFAULT_LR = 2e-4
DEFAULT_BETAS = (0.5, 0.999)
#: Standard deviation of the Gaussian noise added to training embeddings, in
#: the embedding's own units (a dlib vector has norm about 1, so 0.01 is about
#: 1% of its length and a few percent of the 0.6 threshold): a regulariser
#: that teaches the generator that nearby embeddings are the same face.
DEFAULT_NOISE_STD = 0.01
DEFAULT_VALIDATE_EVERY = 5
DEFAULT_DEVICE = "auto"
#: Reconstructions embedded per call of ``embed_fn`` and generated per forward pass.
DEFAULT_EVAL_BATCH_SIZE = 500
DEFAULT_IMAGE_SIZE = 64
DEFAULT_BASE_CHANNELS = 512
