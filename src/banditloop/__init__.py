"""banditloop: a self-hosted personalization service speaking Azure Personalizer's API."""

__version__ = "0.1.0"
