from prune.pipeline.cli import main

raise SystemExit(main())
