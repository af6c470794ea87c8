from actrec.cli import main

main()
