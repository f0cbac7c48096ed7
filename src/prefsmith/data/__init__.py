"""Reading and writing rows: file formats, row shapes, resumable output."""
