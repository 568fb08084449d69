from fitnets.cli import main

raise SystemExit(main())
