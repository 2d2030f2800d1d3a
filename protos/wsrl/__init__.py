"""Package `wsrl` of the wire format."""
