from docmodel_operator.main import main

raise SystemExit(main())
