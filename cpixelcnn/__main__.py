import sys

from cpixelcnn.cli import main

sys.exit(main())
