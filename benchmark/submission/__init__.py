"""A method's submission: the archive a plugin author writes and a maintainer verifies.

The author writes it with ``pebench submit``; the maintainer verifies it with ``pebench verify``.
"""
