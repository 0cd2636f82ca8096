from sidecar.cli import main

if __name__ == "__main__":  # the ingest writer process imports this module too
    main()
