"""What the module computes, without its GUI: :class:`TranslationLogic`.

The module's ``RevGANSlicerLogic`` is this class plus Slicer's parameter node; it is also
usable on its own from Slicer's Python console or plain Python with the MRML library::

    from RevGANSlicerLib.logic import TranslationLogic
    from RevGANSlicerLib.tasks import Task
    logic = TranslationLogic()
    result = logic.translate(getNode("CT"), Task.SuperResolution, device="cpu", tileSize=64)
    logic.showSideBySide(getNode("CT"), result)

Two ways to run a translation:

- :meth:`TranslationLogic.translate`: in this process, tile by tile, calling
  ``progress(done, total)`` after each tile and ``cancel()`` before the next one (the GUI
  processes its events in ``progress``, so Slicer stays responsive and Cancel works);
- :meth:`TranslationLogic.startTranslation`: ``revgan translate`` in a separate process
  (PythonSlicer); returns a :class:`TranslationJob` to poll from a timer; cancel kills
  the whole process tree; :meth:`TranslationLogic.finishTranslation` loads the result.

Either way the input node is never modified and, unless an output node is given, the
result is a NEW node named after the input and the task, with the input's window/level.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import dependencies, engine, sequences
from .cursor import waitCursor
from .nodes import (copyDisplaySettings, createOutputNode, describeSeries, isScalarVolumeNode, placeLikeReference,
                    volumeFromNode)
from .process import ConsoleProcess
from .tasks import Direction, Task, checkModelForTask, directionFor, outputName, seriesDescription, taskInfo

from RevGANCore.errors import CancelledError, ModelFileError, RevGANError, VolumeError  # noqa: E402

#: Results bigger than this need the user's confirmation in the GUI (see estimateOutputBytes).
LARGE_OUTPUT_BYTES = 4 * 2 ** 30


class BusyError(RevGANError):
    """The Logic is already installing packages or translating: a second click must not
    start a second installation or run, nor change the input mid-run."""


class TranslationJob:
    """A translation running in a separate process (see :meth:`TranslationLogic.startTranslation`).

    Poll it from a timer: :meth:`poll` returns None while it runs and the process's return
    code when it has ended; :attr:`progress` is the last (done, total) and
    :attr:`statusMessage` the process's last message (e.g. a GPU memory fallback) and
    :attr:`warnings` its warnings so far (e.g. a voxel spacing outside the model's range)."""

    def __init__(self, process: ConsoleProcess, folder: str, outputPath: str, inputNodeID: str,
                 outputNodeID: Optional[str], outputName: str, task: Task, description: str,
                 seriesDescription: str = ""):
        self.process = process
        self.seriesDescription = seriesDescription  # of the result, for DICOM export
        self.folder = folder
        self.outputPath = outputPath
        self.inputNodeID = inputNodeID
        self.outputNodeID = outputNodeID
        self.outputName = outputName
        self.task = task
        self.description = description
        self.finished = False

    def poll(self) -> Optional[int]:
        return self.process.poll()

    @property
    def progress(self) -> Optional[Tuple[int, int]]:
        return self.process.progress

    @property
    def statusMessage(self) -> str:
        return self.process.lastMessage

    @property
    def warnings(self) -> List[str]:
        return list(self.process.warnings)

    @property
    def cancelled(self) -> bool:
        return self.process.cancelled

    def cancel(self) -> None:
        """Stop the computation (the whole process tree) and delete its files."""
        self.process.cancel()
        self.process.wait(timeout=10)
        self.cleanup()

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        return self.process.wait(timeout)

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class TranslationLogic:
    """Translate CT volume nodes with RevGAN models (see the module docstring)."""

    def __init__(self, scene=None):
        self._scene = scene
        self._metadataCache: Dict[Tuple[str, float], Any] = {}
        self.lastDuration: Optional[float] = None  # seconds taken by the last translation
        self.lastWarnings: List[str] = []  # what the last translation warned about, for the result's status
        self._busyWith: Optional[str] = None  # what runs in this process (install, translation)
        self.activeJob: Optional[TranslationJob] = None  # the separate-process run, until finished

    # ------------------------------------------------------------------ busy state
    @property
    def busy(self) -> bool:
        """Whether an installation or a translation (here or in a separate process) runs."""
        return self._busyWith is not None or self.activeJob is not None

    def _checkNotBusy(self) -> None:
        if self._busyWith is not None:
            raise BusyError(f"RevGANSlicer is busy {self._busyWith}; wait for it to finish")
        if self.activeJob is not None:
            raise BusyError("RevGANSlicer is busy translating in a separate process; wait or cancel it")

    @contextlib.contextmanager
    def busyWith(self, what: str):
        """Hold the Logic busy while ``what`` runs in this process (its event processing
        lets clicks through: they get BusyError)."""
        self._checkNotBusy()
        self._busyWith = what
        try:
            yield
        finally:
            self._busyWith = None

    def stopActiveJob(self) -> None:
        """Cancel the separate-process run, if any (kills its process tree, deletes its
        files) and leave the Logic idle, e.g. when the scene closes."""
        job, self.activeJob = self.activeJob, None
        if job is not None and not job.finished:
            job.cancel()
            job.finished = True

    def ensureDependencies(self, askUser: bool = True) -> str:
        """Check (and after asking, install) PyTorch; see RevGANSlicerLib.dependencies.
        A second call while the first is installing raises BusyError."""
        with self.busyWith("installing Python packages"):
            return dependencies.ensureDependencies(askUser=askUser)

    # ------------------------------------------------------------------ scene
    @property
    def scene(self):
        if self._scene is not None:
            return self._scene
        import slicer

        return slicer.mrmlScene

    # ------------------------------------------------------------------ models
    def modelPathForTask(self, task: Task, modelPath: str = "") -> str:
        """The model file a task uses: the chosen file for a custom model, else the shipped
        model for the task. Raises ModelFileError with advice when there is none."""
        task = Task(task)
        info = taskInfo(task)
        if task is Task.CustomModel:
            if not modelPath:
                raise ModelFileError("choose a model file for 'Custom model file'")
            return engine.resolveModel(modelPath)
        if modelPath:
            return engine.resolveModel(modelPath)
        found = engine.defaultModel(info.modelTask)
        if not found:
            raise ModelFileError(
                f"no shipped {info.modelTask.replace('_', '-')} model is installed with RevGANSlicer; "
                "choose 'Custom model file' and pick a model file")
        return found

    @staticmethod
    def chosenModel(task: Task, modelName: str = "", modelPath: str = "") -> str:
        """What to pass as ``modelPath`` for the panel's choice: the model picked by name in
        the model selector, else (custom task) the model file, else "" (the task's shipped model)."""
        if modelName:
            return modelName
        return modelPath if Task(task) is Task.CustomModel else ""

    # ------------------------------------------------------------------ model manager
    def listModels(self) -> List[Any]:
        """Shipped models, then the ones the user added (see RevGANCore.model_store)."""
        return engine.allModels()

    def modelChoices(self, task: Task) -> List[Tuple[str, str]]:
        """(label, value) of the model selector for ``task``: first the default ("" = the
        task's shipped model, or for a custom task the model file), then every model made
        for the task by name (for a custom task: every model)."""
        task = Task(task)
        wanted = taskInfo(task).modelTask
        first = "Model file (below)" if task is Task.CustomModel else "Shipped model for this task"
        choices = [(first, "")]
        for entry in self.listModels():
            if wanted is None or entry.task == wanted:
                choices.append((f"{entry.name} ({entry.origin}, {entry.task})", entry.name))
        return choices

    def addModel(self, path: str, name: Optional[str] = None) -> Any:
        """Add a model file to the user's models (validated, copied, checksum recorded)."""
        self._checkNotBusy()
        return engine.addUserModel(path, name)

    def removeModel(self, name: str) -> Any:
        """Remove a model the user added (a shipped one cannot be removed)."""
        self._checkNotBusy()
        return engine.removeUserModel(name)

    def modelManagerCard(self, name: str) -> List[Tuple[str, str]]:
        """(label, text) rows of a listed model: its card, where it is, its checksum."""
        entry = next((item for item in self.listModels() if item.name == name), None)
        if entry is None:
            return [("Model", f"no model named {name!r}")]
        rows = [("Name", entry.name), ("Origin", "added by you" if entry.origin == "user" else "shipped")]
        try:
            rows += engine.modelCard(self.modelMetadata(name), str(entry.path))
        except RevGANError as error:  # e.g. a checksum mismatch: say so instead of a card
            rows.append(("Error", str(error)))
        if entry.sha256:
            rows.append(("SHA-256", entry.sha256))
        return rows

    def modelMetadata(self, modelPath: str) -> Any:
        """A model file's (or a listed model's) metadata, cached while the file is unchanged;
        a user model's checksum is verified on every call."""
        path = engine.resolveModel(modelPath)
        try:
            status = os.stat(path)
            key = (os.path.abspath(path), status.st_mtime, status.st_size)
        except OSError:
            key = (path, 0.0, 0)
        if key not in self._metadataCache:
            self._metadataCache[key] = engine.readMetadata(path)
        return self._metadataCache[key]

    def modelCard(self, task: Task, modelPath: str = "") -> List[Tuple[str, str]]:
        """(label, text) rows describing the model a task will use, or why there is none."""
        task = Task(task)
        try:
            path = self.modelPathForTask(task, modelPath)
        except ModelFileError as error:
            return [("Model", str(error))]
        except ImportError as error:
            return [("Model", f"described once PyTorch is installed (on the first run): {error}")]
        try:
            metadata = self.modelMetadata(path)
        except ImportError as error:
            return [("Model", path), ("Note", f"details appear once PyTorch is installed ({error})")]
        except RevGANError as error:
            return [("Model", path), ("Error", str(error))]
        rows = engine.modelCard(metadata, path)
        warning = checkModelForTask(task, metadata)
        if warning:
            rows.insert(0, ("Warning", warning))
        return rows

    def directionFor(self, task: Task, metadata: Any, customDirection=Direction.Forward) -> str:
        return directionFor(task, metadata, customDirection)

    def estimateOutputBytes(self, inputNode, task: Task, metadata: Any = None) -> int:
        """Size of the result in memory (int16), to warn before huge super-resolutions."""
        image = inputNode.GetImageData() if inputNode is not None else None
        if image is None:
            return 0
        voxels = float(np.prod(image.GetDimensions()))
        if metadata is not None and metadata.scale_factors_xyz:
            voxels *= float(np.prod(metadata.scale_factors_xyz))
        elif Task(task) is Task.SuperResolution:
            voxels *= 2 * 2 * 4
        return int(voxels * np.dtype(engine.RESULT_DTYPE).itemsize)

    # ------------------------------------------------------------------ checks
    @staticmethod
    def usableTileSize(tileSize: int, metadata: Any, message: Optional[Callable[[str], None]] = None) -> int:
        """``tileSize`` raised to the smallest tile the model allows (0 stays 0: automatic).
        The core refuses tiles smaller than twice its receptive-field halo; the panel's
        spin box does not know the model, so the Logic adjusts and says so."""
        tileSize = int(tileSize or 0)
        if tileSize <= 0:
            return 0
        smallest = engine.minimumTileSize(metadata)
        if tileSize < smallest:
            if message is not None:
                message(f"Tile size {tileSize} is below this model's minimum; using {smallest} voxels.")
            return smallest
        return tileSize

    @staticmethod
    def checkInputOutput(inputNode, outputNode=None) -> None:
        if inputNode is None:
            raise VolumeError("select an input volume")
        if not isScalarVolumeNode(inputNode):
            raise VolumeError(f"{inputNode.GetName()}: is a {inputNode.GetClassName()}; choose a scalar CT volume")
        if outputNode is not None and outputNode.GetID() == inputNode.GetID():
            raise VolumeError("the output volume must not be the input volume: choose 'Create new volume'")

    def _prepare(self, inputNode, task: Task, modelPath: str, outputNode, name: Optional[str]):
        task = Task(task)
        self.checkInputOutput(inputNode, outputNode)
        path = self.modelPathForTask(task, modelPath)
        name = name or outputName(inputNode.GetName(), task)
        return task, path, name

    # ------------------------------------------------------------------ in this process
    def translate(self, inputNode, task: Task = Task.SuperResolution, modelPath: str = "",
                  direction=Direction.Forward, device: str = "auto", tileSize: int = 0, outputNode=None,
                  name: Optional[str] = None, progress: Optional[Callable[[int, int], None]] = None,
                  cancel: Optional[Callable[[], bool]] = None, message: Optional[Callable[[str], None]] = None,
                  model: Any = None, threads: int = 0):
        """Translate ``inputNode`` in this process and return the output node.

        ``task`` picks the shipped model and its direction (``modelPath`` overrides the model;
        ``direction`` is used for :attr:`Task.CustomModel`). ``model`` passes an already
        loaded model instead (its metadata decides the direction). ``tileSize`` 0 lets the
        core choose; ``threads`` > 0 sets PyTorch's CPU threads for the run (restored
        afterwards). ``progress(done, total)``/``cancel()``/``message(text)``: see
        :func:`RevGANSlicerLib.engine.translateVolume`; warnings go to ``message`` as
        "Warning: ..." and are kept in :attr:`lastWarnings`. Raises CancelledError when cancelled
        (no node is left behind). BusyError while another run or installation is going on:
        ``progress`` processes Slicer's events, so the panel's buttons stay clickable."""
        with self.busyWith("translating"):
            with engine.cpuThreads(threads):
                return self._translateHere(inputNode, Task(task), modelPath, direction, device, tileSize,
                                           outputNode, name, progress, cancel, message, model)

    def _loadModel(self, task: Task, modelPath: str, model: Any) -> Tuple[Any, str]:
        """(model, the name it is known by): ``model`` itself when given, else the task's."""
        if model is not None:
            return model, model.name
        path = self.modelPathForTask(task, modelPath)
        loaded = engine.loadModel(path, device="cpu")
        # Loading already looked the file up in the registry (known_as): no second look.
        return loaded, loaded.known_as or _fileModelName(path)

    def _translateHere(self, inputNode, task: Task, modelPath, direction, device, tileSize, outputNode, name,
                       progress, cancel, message, model):
        self.checkInputOutput(inputNode, outputNode)
        model, modelName = self._loadModel(task, modelPath, model)
        metadata = model.metadata
        chosen = directionFor(task, metadata, direction)
        tileSize = self.usableTileSize(tileSize, metadata, message)
        with waitCursor():  # a copy of the voxels: seconds for a large scan
            volume = volumeFromNode(inputNode)
        started = time.monotonic()
        try:
            result = engine.translateVolume(model, volume, direction=chosen, tileSize=tileSize, device=device,
                                            progress=progress, cancel=cancel, message=message,
                                            warning=self._keepWarnings(message))
        finally:
            engine.releaseMemory()
        self.lastDuration = time.monotonic() - started
        with waitCursor():  # several GB for a large super-resolution
            node = createOutputNode(result, name or outputName(inputNode.GetName(), task), referenceNode=inputNode,
                                    outputNode=outputNode, scene=self.scene, dtype=engine.RESULT_DTYPE)
            describeSeries(node, seriesDescription(task, modelName, chosen))
        return node

    def _keepWarnings(self, message: Optional[Callable[[str], None]]) -> Callable[[str], None]:
        """The core's warning callback for a run in this process: each distinct warning is
        kept in :attr:`lastWarnings` (a sequence's frames repeat them) and shown through
        ``message``, labelled like the separate process's warning lines in the panel."""
        self.lastWarnings = []

        def warning(text: str) -> None:
            if text not in self.lastWarnings:
                self.lastWarnings.append(text)
                if message is not None:
                    message(f"Warning: {text}")

        return warning

    # ------------------------------------------------------------------ sequences
    def sequenceOf(self, inputNode):
        """(browser, sequence) when ``inputNode`` shows a frame of a sequence, else None."""
        return sequences.sequenceOf(inputNode, self.scene)

    def translateSequence(self, inputNode, task: Task = Task.SuperResolution, modelPath: str = "",
                          direction=Direction.Forward, device: str = "auto", tileSize: int = 0,
                          name: Optional[str] = None, progress: Optional[Callable[[int, int], None]] = None,
                          cancel: Optional[Callable[[], bool]] = None,
                          message: Optional[Callable[[str], None]] = None, model: Any = None, threads: int = 0):
        """Translate every frame of the sequence whose proxy is ``inputNode``, in this
        process; returns the proxy node of the NEW result sequence (one volume per frame,
        same index values), synchronised with the input's browser.

        ``progress(done, total)`` runs over all frames; ``cancel()`` is polled between
        frames (and tiles): CancelledError, and no sequence is added to the scene."""
        with self.busyWith("translating a sequence"), engine.cpuThreads(threads):
            return self._translateSequence(inputNode, Task(task), modelPath, direction, device, tileSize, name,
                                           progress, cancel, message, model)

    def _translateSequence(self, inputNode, task, modelPath, direction, device, tileSize, name, progress, cancel,
                           message, model):
        found = self.sequenceOf(inputNode)
        if found is None:
            raise VolumeError(f"{inputNode.GetName() if inputNode else 'no input'}: is not the volume of a sequence")
        browser, sequence = found
        model, modelName = self._loadModel(task, modelPath, model)
        chosen = directionFor(task, model.metadata, direction)
        tileSize = self.usableTileSize(tileSize, model.metadata, message)
        items = sequences.frames(sequence)
        count = len(items)
        if not count:
            raise VolumeError(f"{sequence.GetName()}: the sequence has no frames")
        result = sequences.newSequenceLike(sequence, name or outputName(sequence.GetName(), task))
        warning = self._keepWarnings(message)
        started = time.monotonic()
        for index, (value, frame) in enumerate(items):
            if cancel is not None and cancel():
                raise CancelledError("the translation was cancelled; no result sequence was added")
            if message is not None:
                message(f"Frame {index + 1} of {count} ({sequence.GetIndexName() or 'index'} {value})")
            with waitCursor():
                volume = volumeFromNode(frame)
            frameProgress = None if progress is None else _frameProgress(progress, index, count)
            try:
                translated = engine.translateVolume(model, volume, direction=chosen, tileSize=tileSize, device=device,
                                                    progress=frameProgress, cancel=cancel, message=message,
                                                    warning=warning)
            finally:
                engine.releaseMemory()
            with waitCursor():
                sequences.addFrame(result, value, translated, dtype=engine.RESULT_DTYPE)
        self.lastDuration = time.monotonic() - started
        with waitCursor():
            proxy = sequences.addSynchronized(self.scene, browser, result)
            copyDisplaySettings(inputNode, proxy)
            placeLikeReference(proxy, inputNode)
            describeSeries(proxy, seriesDescription(task, modelName, chosen))
        return proxy

    # ------------------------------------------------------------------ separate process
    def startTranslation(self, inputNode, task: Task = Task.SuperResolution, modelPath: str = "",
                         direction=Direction.Forward, device: str = "auto", tileSize: int = 0, outputNode=None,
                         name: Optional[str] = None, python: Optional[str] = None,
                         onLine: Optional[Callable[[str], None]] = None, threads: int = 0) -> TranslationJob:
        """Start ``revgan translate`` on ``inputNode`` in a separate process and return the
        job at once. The input is written to a temporary file first (a copy: the node is
        not touched), the output is read back by :meth:`finishTranslation`; ``threads`` > 0
        limits the process's CPU threads (``--threads``). The job is the
        Logic's :attr:`activeJob` (busy) until finished or stopped."""
        from RevGANCore.volume_io import write_volume

        self._checkNotBusy()
        task, path, name = self._prepare(inputNode, task, modelPath, outputNode, name)
        metadata = self.modelMetadata(path)
        chosen = directionFor(task, metadata, direction)
        notes: List[str] = []
        tileSize = self.usableTileSize(tileSize, metadata, notes.append)
        folder = tempfile.mkdtemp(prefix="RevGANSlicer-", dir=self._temporaryFolder())
        try:
            inputPath = os.path.join(folder, "input.nrrd")
            outputPath = os.path.join(folder, "output.nrrd")
            with waitCursor():  # seconds to write a large scan; the UI thread waits for it
                write_volume(volumeFromNode(inputNode), inputPath, dtype="float32")
            command = engine.translateCommand(inputPath, outputPath, path, direction=chosen, tileSize=tileSize,
                                              device=device, python=python, threads=threads)
            process = ConsoleProcess(command, env=engine.processEnvironment(), cwd=folder, onLine=onLine).start()
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        if notes:
            process.lastMessage = notes[-1]
        description = f"{taskInfo(task).buttonText} with {os.path.basename(path)} ({chosen}) on {device}"
        self.activeJob = TranslationJob(process, folder, outputPath, inputNode.GetID(),
                                        outputNode.GetID() if outputNode is not None else None, name, task,
                                        description, seriesDescription(task, _modelName(path), chosen))
        return self.activeJob

    def finishTranslation(self, job: TranslationJob):
        """After the job ended: load its result into a new (or the chosen) output node and
        return it (its warnings are in :attr:`lastWarnings`). Raises CancelledError if it was
        cancelled, RevGANError with the
        process's last output lines if it failed. Temporary files are deleted."""
        from RevGANCore.volume_io import read_volume

        try:
            if job.poll() is None:
                raise RevGANError("the translation is still running")
            if job.cancelled:
                raise CancelledError("the translation was cancelled")
            if job.process.returncode != 0 or not os.path.isfile(job.outputPath):
                reason = job.process.errorMessage or job.process.outputTail(15)
                raise RevGANError(f"the translation failed (exit code {job.process.returncode}): {reason}")
            inputNode = self.scene.GetNodeByID(job.inputNodeID)
            outputNode = self.scene.GetNodeByID(job.outputNodeID) if job.outputNodeID else None
            self.lastDuration = ((job.process.endTime or time.monotonic()) - (job.process.startTime or 0.0))
            self.lastWarnings = job.warnings
            with waitCursor():  # reading and loading several GB for a large super-resolution
                result = read_volume(job.outputPath, expect_ct=False)
                node = createOutputNode(result, job.outputName, referenceNode=inputNode, outputNode=outputNode,
                                        scene=self.scene, dtype=engine.RESULT_DTYPE)
                if job.seriesDescription:
                    describeSeries(node, job.seriesDescription)
            return node
        finally:
            job.finished = True
            job.cleanup()
            if self.activeJob is job:
                self.activeJob = None

    def translateInSeparateProcess(self, inputNode, task: Task = Task.SuperResolution, timeout: Optional[float] = None,
                                   progress: Optional[Callable[[int, int], None]] = None, **options):
        """:meth:`startTranslation` + wait + :meth:`finishTranslation`, for scripts and tests
        (blocks the caller; processes Slicer's events while waiting when in Slicer)."""
        job = self.startTranslation(inputNode, task, **options)
        application = _application()
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = None
        while job.poll() is None:
            if progress is not None and job.progress is not None and job.progress != seen:
                seen = job.progress
                progress(*seen)
            if deadline is not None and time.monotonic() > deadline:
                self.stopActiveJob()
                raise RevGANError(f"the translation did not finish within {timeout:g} s")
            if application is not None:
                application.processEvents()
            time.sleep(0.05)
        return self.finishTranslation(job)

    @staticmethod
    def startCommand(arguments, onLine: Optional[Callable[[str], None]] = None, cwd: Optional[str] = None,
                     python: Optional[str] = None) -> ConsoleProcess:
        """Run any ``revgan`` command (e.g. ``["train", "config.toml"]``) in a separate
        process and return it at once: poll it (``poll()``, ``progress``, ``outputTail()``)
        from a timer or the console; ``cancel()`` stops it and everything it started."""
        command = engine.revganCommand(arguments, python=python)
        return ConsoleProcess(command, env=engine.processEnvironment(), cwd=cwd, onLine=onLine).start()

    @staticmethod
    def _temporaryFolder() -> Optional[str]:
        application = _application()
        folder = getattr(application, "temporaryPath", None) if application is not None else None
        return folder if folder and os.path.isdir(folder) else None

    # ------------------------------------------------------------------ display and data
    def showSideBySide(self, inputNode, outputNode) -> None:
        """Red (left) = input, Yellow (right) = result, linked and fitted."""
        from .layout import showSideBySide

        showSideBySide(inputNode, outputNode, scene=self.scene)

    def loadPhantoms(self, kinds=("lr", "sharp"), seed: int = 0, shape=None,
                     volumes: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Generate a chest phantom case (or use ``volumes``, one already generated) and add
        the chosen kinds ("lr", "hr", "sharp", "smooth") as new nodes; see sampledata.
        BusyError during a run: the run's input must not change under it."""
        self._checkNotBusy()
        from .sampledata import DEFAULT_SHAPE, loadPhantomNodes

        return loadPhantomNodes(kinds, seed=seed, shape=shape or DEFAULT_SHAPE, scene=self.scene, volumes=volumes)


def _modelName(path: str) -> str:
    """The name a model file is known by: the one it is listed under (the name the user
    picked, as the command line's output and DICOM headers carry it), else its file name
    without the ending."""
    from RevGANCore.registry import registered_name

    return registered_name(path) or _fileModelName(path)


def _fileModelName(path: str) -> str:
    """A model file's name without the ending: the name of a file the registry does not list."""
    base = os.path.basename(str(path))
    return base[: -len(".safetensors")] if base.endswith(".safetensors") else base


#: Progress steps per frame of a sequence (a frame's tiles are mapped onto them).
FRAME_STEPS = 1000


def _frameProgress(progress: Callable[[int, int], None], index: int, count: int) -> Callable[[int, int], None]:
    """Turn a frame's (done, total) tiles into progress over all ``count`` frames."""

    def report(done: int, total: int) -> None:
        fraction = done / total if total else 1.0
        progress(index * FRAME_STEPS + int(round(FRAME_STEPS * fraction)), count * FRAME_STEPS)

    return report


def _application():
    try:
        import slicer

        return getattr(slicer, "app", None)
    except ImportError:
        return None
