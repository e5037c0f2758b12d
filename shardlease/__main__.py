import sys

from shardlease.cli import main

sys.exit(main())
