from syscribe.cli import main

main()
