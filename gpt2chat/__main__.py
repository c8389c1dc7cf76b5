"""``python -m gpt2chat`` (also what ``torchrun`` / ``accelerate launch -m gpt2chat`` run)."""

import sys

from .cli import main

sys.exit(main())
