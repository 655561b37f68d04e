"""One run: its `Session`, `execute`, its summary, and the weights it reads or writes."""
