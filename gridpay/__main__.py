from gridpay.cli import main

main()
