"""Personal data: erasing one person (``forget``) and masking contacts in free text (``masking``)."""
