"""Sequences (Slicer's Sequences module): finding the sequence behind a volume, and
building a result sequence frame by frame.

A 4D scan in Slicer is a ``vtkMRMLSequenceNode`` of volumes, shown through a *proxy*
volume node that a ``vtkMRMLSequenceBrowserNode`` fills with the selected frame. The
module's input selector shows the proxy; :func:`sequenceOf` finds the browser and the
sequence behind it. A result sequence is built outside the scene (nothing is left behind
when a run is cancelled) and added at the end, synchronised with the input's browser, so
that both play together and the result's proxy shows the same frame as the input's.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from .nodes import SCALAR_VOLUME_CLASS, updateNodeFromVolume

BROWSER_CLASS = "vtkMRMLSequenceBrowserNode"

_fallbackLogics = {}


def sequenceOf(node, scene) -> Optional[Tuple[object, object]]:
    """(browser, sequence) when ``node`` is the proxy of a sequence in ``scene``, else None."""
    if node is None or scene is None:
        return None
    browsers = scene.GetNodesByClass(BROWSER_CLASS)
    for index in range(browsers.GetNumberOfItems()):
        browser = browsers.GetItemAsObject(index)
        if browser.IsProxyNodeID(node.GetID()):
            sequence = browser.GetSequenceNode(node)
            if sequence is not None:
                return browser, sequence
    return None


def frames(sequence) -> List[Tuple[str, object]]:
    """(index value, data node) of every frame, in the sequence's order."""
    return [(sequence.GetNthIndexValue(i), sequence.GetNthDataNode(i)) for i in range(sequence.GetNumberOfDataNodes())]


def newSequenceLike(sequence, name: str):
    """An empty sequence, not in any scene, with ``sequence``'s index name, unit and type."""
    import slicer

    result = slicer.vtkMRMLSequenceNode()
    result.SetName(name)
    result.SetIndexName(sequence.GetIndexName())
    result.SetIndexUnit(sequence.GetIndexUnit())
    result.SetIndexType(sequence.GetIndexType())
    return result


def addFrame(sequence, indexValue: str, volume, dtype=None) -> None:
    """Add ``volume`` (a RevGANCore Volume) as the frame at ``indexValue`` (the sequence
    keeps its own copy)."""
    import slicer

    node = getattr(slicer, SCALAR_VOLUME_CLASS)()
    updateNodeFromVolume(node, volume, dtype=dtype)
    sequence.SetDataNodeAtValue(node, indexValue)


def _sequencesLogic(scene):
    """Slicer's Sequences module logic; in plain Python with the MRML library (no module
    manager), one created for ``scene``."""
    import slicer

    try:
        return slicer.modules.sequences.logic()
    except AttributeError:
        pass
    logic = _fallbackLogics.get(id(scene))
    if logic is None or logic.GetMRMLScene() is not scene:
        logic = slicer.vtkSlicerSequencesLogic()
        logic.SetMRMLScene(scene)
        _fallbackLogics[id(scene)] = logic
    return logic


def addSynchronized(scene, browser, sequence):
    """Add ``sequence`` to ``scene``, synchronised with ``browser``; returns its proxy node
    (showing the browser's current frame)."""
    scene.AddNode(sequence)
    browser.AddSynchronizedSequenceNode(sequence)
    _sequencesLogic(scene).UpdateProxyNodesFromSequences(browser)
    return browser.GetProxyNode(sequence)
