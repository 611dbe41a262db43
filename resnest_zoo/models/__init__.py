"""The networks: ResNeSt-101-D8 backbone, the four heads, their assembly into segmentors, inference rewrites.

Pure ``torch.nn`` code: nothing here reads files, downloads or decodes images.
"""
