"""rewarm: continual pre-training of language models with controlled LR rewarming, replay and
forgetting/adaptation measurement."""

__version__ = "0.1.0"
