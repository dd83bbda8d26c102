"""The one exception type for bad user input.

The command line turns it into a single line on stderr and exit status 2, so its message must
name the offending key or file and read well on its own.
"""


class UserError(Exception):
    """Bad input from the user: config keys, values, files or an incompatible run directory."""
