"""Data sets: synthetic, CIFAR-100 and digits, read and checked before any framework starts (`source`)."""
