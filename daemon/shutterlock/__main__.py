from shutterlock.cli import main

main()
