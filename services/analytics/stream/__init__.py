"""The Faust stream processor: chat turns and feedback in, metrics and conversations out."""
