"""The commands, one module each: ``se-cca-search <command>`` (``python -m search <command>``;
console.COMMANDS lists them). A command parses its flags, checks its inputs before any work and calls
the library in ``search/``; no command imports another. ``python -m search.<command>`` runs the same
module: search/<command>.py is an alias kept for that.
"""
