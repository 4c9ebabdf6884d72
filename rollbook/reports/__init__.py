"""Pure report renderers: flows hand them data and publish the markdown they return."""
