from mnist_search.cli import main

raise SystemExit(main())
