"""The dataset readers, one module each; :mod:`natv2.data.registry` names them.

Each module defines ``read(request: ReadRequest) -> DatasetSplits`` and is imported only when its
dataset is loaded.
"""
