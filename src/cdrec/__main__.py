"""``python -m cdrec``: the command line, as torchrun launches it (``-m cdrec run ...``)."""

from cdrec.cli import app

if __name__ == "__main__":
    app(prog_name="cdrec")
