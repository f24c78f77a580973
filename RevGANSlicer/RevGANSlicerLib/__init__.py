"""The parts of the RevGANSlicer module that do not need Slicer's GUI.

Everything here imports with the MRML library alone (the ``slicer-core`` package in plain
Python, or Slicer itself) and never imports ``qt``, ``ctk`` or ``ScriptedLoadableModule``
at module level, so it is tested with pytest outside Slicer. Slicer-only conveniences
(the layout manager, message boxes, pip helpers, sample-data registration) are reached
through ``slicer.app`` / ``slicer.util`` inside the functions that need them.

- :mod:`.corepath`      make ``import RevGANCore`` work from a source checkout or an install
- :mod:`.tasks`         the four tasks, their directions, button labels and output names
- :mod:`.nodes`         volume node <-> :class:`RevGANCore.volume.Volume` (RAS <-> LPS, oblique)
- :mod:`.engine`        the only place that calls RevGANCore's inference and model files
- :mod:`.process`       a translation in a separate process: progress, messages, cancel
- :mod:`.logic`         :class:`TranslationLogic`, what the module's Logic class adds to
- :mod:`.sequences`     the sequence behind a proxy volume; result sequences, frame by frame
- :mod:`.cursor`        wait cursor around UI-thread work (writing inputs, loading results)
- :mod:`.layout`        side-by-side comparison layout
- :mod:`.dependencies`  PyTorch (and friends) on first use, never at import
- :mod:`.sampledata`    chest phantoms generated locally, no network
"""
