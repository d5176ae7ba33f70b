"""Voice conversion: voice features of a recording, and methods that move speech toward a target voice."""
