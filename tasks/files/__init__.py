"""Pure decisions about workspace files: names, relative paths, who may send what."""
