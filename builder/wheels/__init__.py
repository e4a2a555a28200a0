"""One wheel at a time: repair, edit, inspect, ISA scan. Analysis returns data; edits apart."""
