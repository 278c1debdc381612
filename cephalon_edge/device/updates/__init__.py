"""Field updates of a package (device half, torch-free): ``diff`` makes an update file that
carries only what changed, ``apply`` verifies it and swaps the package atomically, ``keys``
signs and checks updates with Ed25519."""
