from hydradet.cli import main; import sys; sys.exit(main())
