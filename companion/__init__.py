"""companion: the code behind "Train your own ChatGPT".

Organized by concept, not by chapter: data, tokenizer, ngram, neural_lm, models, attention,
sampling, pretrain, sft, reward, rl, ppo, critic_free, dpo, rlaif, evaluation, widgets,
pipeline (every module, one line each: book/api/index.md).  Import the submodule you need,
e.g. ``from companion.data import load_dataset``.
"""

from companion.profiles import Profile, describe, hardware, profile
from companion.seeding import seed_everything
from companion.versions import check_versions

check_versions()  # warns (naming the supported range) when an installed library is outside it

__version__ = "0.1.0"
__all__ = ["Profile", "describe", "hardware", "profile", "seed_everything", "__version__"]
