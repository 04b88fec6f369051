"""The HTTP layer: Azure Personalizer's wire format over the library API."""
