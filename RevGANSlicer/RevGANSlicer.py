import logging
import os
import unittest
from typing import Annotated, Optional

import qt
import vtk

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from slicer import vtkMRMLScalarVolumeNode

from RevGANSlicerLib.corepath import ensureRevGANCoreImportable

ensureRevGANCoreImportable()

from RevGANSlicerLib import dependencies, engine, sequences  # noqa: E402
from RevGANSlicerLib.logic import LARGE_OUTPUT_BYTES, TranslationLogic  # noqa: E402
from RevGANSlicerLib.process import parseEvent  # noqa: E402
from RevGANSlicerLib.tasks import Direction, Task, domainLabel, taskInfo  # noqa: E402

# Not "from __future__ import annotations": the parameter node wrapper reads the
# annotations at run time. Python 3.9 syntax only (Slicer 5.8 ships Python 3.9).

#
# RevGANSlicer
#


class RevGANSlicer(ScriptedLoadableModule):
    """Super-resolution and reconstruction-kernel conversion of CT volumes with
    memory-efficient 3D reversible GANs (RevGAN)."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("RevGAN CT Translation")
        # Categories are translated in Slicer's shared context, so every module of a category
        # lands in one (translated) folder of the module selector.
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Image Synthesis")]
        self.parent.dependencies = []
        self.parent.contributors = ["RevGAN for 3D Slicer developers"]
        self.parent.helpText = _("""
<p>Translates a CT volume with a memory-efficient 3D reversible GAN (RevGAN), into a <b>new</b>
volume; the input is never changed.</p>
<ul>
<li><b>Super-resolve</b>: a volume 2x finer in x and y and 4x finer in z (the model's factors), covering
the same physical box and orientation. The added detail is <i>synthesised</i> by the network from what it
learned in training: it can look plausible and still be wrong. Do not measure or diagnose small
structures from it without the original.</li>
<li><b>Kernel sharp &rarr; smooth / smooth &rarr; sharp</b>: the look of a B30f-like (smooth) or
B50f-like (sharp) reconstruction kernel on the same grid, for comparing or harmonising scans
reconstructed with different kernels. It cannot restore information the scanner did not record.</li>
<li><b>Custom model file</b>: any RevGAN model file (for example one you trained), in either direction.</li>
</ul>
<p>The shipped models were trained on synthetic chest phantoms; the model card under the task tells
what each model was trained on and its limits. Results depend on how close a scan is to that training
data. For research use, not for clinical decisions.</p>
<p>Runs on a CUDA GPU when there is one, else on the CPU (slower). Large volumes are processed in
tiles; if the GPU runs out of memory the tiles are made smaller, then the CPU takes over.
See <a href="https://github.com/revgan-slicer/SlicerRevGAN/blob/main/docs/slicer.md">the documentation</a>.</p>
""")
        self.parent.acknowledgementText = _("""
Based on T. F. A. van der Ouderaa, D. E. Worrall, B. van Ginneken, "Chest CT super-resolution and
domain-adaptation using memory-efficient 3D reversible GANs", MIDL 2019, and
T. F. A. van der Ouderaa, D. E. Worrall, "Reversible GANs for memory-efficient image-to-image
translation", CVPR 2019. This is an independent implementation.
""")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Offer generated chest phantoms in the Sample Data module (no download)."""
    try:
        from RevGANSlicerLib.sampledata import registerSampleData as register

        iconPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons", "RevGANSlicer.png")
        register(iconPath, onLoaded=_selectLoadedPhantom)
    except Exception as error:  # sample data are a convenience: never break start-up
        logging.warning(f"RevGANSlicer: sample data not registered: {error}")


def _selectLoadedPhantom(node, kind: str) -> None:
    """A phantom loaded from Sample Data becomes the module's input (the module is opened
    so the user sees what to do next)."""
    slicer.util.selectModule("RevGANSlicer")
    slicer.modules.revganslicer.widgetRepresentation().self().selectPhantom(node, kind)


#
# RevGANSlicerParameterNode
#


@parameterNodeWrapper
class RevGANSlicerParameterNode:
    """
    inputVolume - the CT volume to translate (never modified).
    outputVolume - where the result goes; None: a new volume each run.
    task - super-resolution, kernel conversion either way, or a custom model file.
    direction - direction of a custom model (forward: x -> y).
    modelPath - the custom model file.
    modelName - a listed model (shipped or added by the user) chosen in the model selector;
        "": the task's shipped model (custom task: modelPath).
    device - "auto", "cpu", "cuda:N" or "mps".
    tileSize - tile edge in voxels; 0: chosen by the core.
    cpuThreads - PyTorch's CPU threads for a run; 0: automatic. Also kept in Slicer's settings.
    processAllFrames - when the input shows a frame of a sequence, translate every frame.
    showSideBySide - show original and result side by side after the run.
    runInSeparateProcess - run in PythonSlicer (True) or in Slicer's process tile by tile.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    outputVolume: vtkMRMLScalarVolumeNode
    task: Task = Task.SuperResolution
    direction: Direction = Direction.Forward
    modelPath: str = ""
    modelName: str = ""
    device: str = "auto"
    tileSize: Annotated[int, WithinRange(0, 1024)] = 0
    cpuThreads: Annotated[int, WithinRange(0, 256)] = 0
    processAllFrames: bool = True
    showSideBySide: bool = True
    runInSeparateProcess: bool = True


#
# RevGANSlicerWidget
#


class RevGANSlicerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._cancelRequested = False
        self._deviceNames = ["auto", "cpu"]
        self._devicesListed = False
        self._cardKey = None
        self._pollTimer = None
        self._modelChoicesKey = None
        self._modelChoiceValues = [""]
        self._listedModels = []

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/RevGANSlicer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = RevGANSlicerLogic()

        self.ui.modelPathLineEdit.nameFilters = [_("RevGAN model files (*.safetensors)"), _("All files (*)")]
        self.ui.deviceComboBox.clear()
        self.ui.deviceComboBox.addItem(_("auto (first GPU if any, else CPU)"))
        self.ui.deviceComboBox.addItem(_("CPU"))
        self.ui.progressBar.setVisible(False)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.loadLowResolutionPhantomButton.connect("clicked(bool)", lambda: self.onLoadPhantom("lr"))
        self.ui.loadSharpPhantomButton.connect("clicked(bool)", lambda: self.onLoadPhantom("sharp"))
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.advancedCollapsibleButton.connect("contentsCollapsed(bool)", self.onAdvancedCollapsed)
        self.ui.modelSelectorComboBox.connect("currentIndexChanged(int)", self.onModelSelectorChanged)
        self.ui.cpuThreadsSpinBox.connect("valueChanged(int)", self.onCpuThreadsChanged)
        self.ui.modelsCollapsibleButton.connect("contentsCollapsed(bool)", self.onModelsCollapsed)
        self.ui.modelsListWidget.connect("currentRowChanged(int)", self.onModelsSelectionChanged)
        self.ui.addModelButton.connect("clicked(bool)", self.onAddModel)
        self.ui.removeModelButton.connect("clicked(bool)", self.onRemoveModel)
        self.ui.removeModelButton.enabled = False

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(100)
        self._pollTimer.connect("timeout()", self.onPollJob)

        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._stopJob()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)

    def onSceneStartClose(self, caller, event) -> None:
        self._stopJob()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        self._parameterNode.cpuThreads = _savedCpuThreads()
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode: Optional[RevGANSlicerParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
            self._updateGUI()

    # ------------------------------------------------------------------ GUI state
    def _updateGUI(self, caller=None, event=None) -> None:
        node = self._parameterNode
        if node is None:
            return
        task = node.task
        custom = task is Task.CustomModel
        for widget in (self.ui.modelPathLabel, self.ui.modelPathLineEdit, self.ui.directionLabel,
                       self.ui.directionComboBox):
            widget.setVisible(custom)
        if self.ui.modelPathLineEdit.currentPath != node.modelPath:
            self.ui.modelPathLineEdit.currentPath = node.modelPath
        self._selectDevice(node.device)
        self._fillModelSelector(task)
        sequence = self.logic.sequenceOf(node.inputVolume) if node.inputVolume else None
        self.ui.allFramesCheckBox.setVisible(sequence is not None)
        self.ui.applyButton.text = taskInfo(task).buttonText
        problem = None
        if not node.inputVolume:
            problem = _("Select an input volume.")
        elif custom and not node.modelPath and not node.modelName:
            problem = _("Choose a model file.")
        elif node.outputVolume and node.outputVolume.GetID() == node.inputVolume.GetID():
            problem = _("The output must not be the input volume: choose 'Create new volume'.")
        running = self._running
        self.ui.applyButton.enabled = problem is None and not running
        self.ui.applyButton.toolTip = problem or taskInfo(task).help
        self.ui.cancelButton.enabled = running
        for button in (self.ui.loadLowResolutionPhantomButton, self.ui.loadSharpPhantomButton,
                       self.ui.addModelButton):
            button.enabled = not running  # a run's input, task and models must not change under it
        selected = self._selectedModel()
        self.ui.removeModelButton.enabled = bool(selected is not None and selected.origin == "user" and not running)
        key = (task, self._chosenModel(), node.direction)
        if key != self._cardKey:
            self._cardKey = key
            # Reading a model file can take a moment: after the panel has been drawn.
            qt.QTimer.singleShot(0, self._updateModelCard)

    def _updateModelCard(self) -> None:
        node = self._parameterNode
        if node is None:
            return
        chosen = self._chosenModel()
        rows = self.logic.modelCard(node.task, chosen)
        if node.task is Task.CustomModel and chosen:
            try:
                metadata = self.logic.modelMetadata(self.logic.modelPathForTask(node.task, chosen))
                rows.insert(0, (_("Direction"), domainLabel(metadata, node.direction.value)))
            except Exception:
                pass
        html = "".join(f"<b>{_escape(label)}:</b> {_escape(text)}<br>" for label, text in rows)
        self.ui.modelCardLabel.text = html

    def _chosenModel(self) -> str:
        """What runs: a model chosen by name, the custom model file, or "" (the task's shipped model)."""
        node = self._parameterNode
        return self.logic.chosenModel(node.task, node.modelName, node.modelPath) if node else ""

    def _fillModelSelector(self, task) -> None:
        """The model selector offers the models made for the task (refilled when the task or
        the list of models changes)."""
        if self._modelChoicesKey == task:
            return
        self._modelChoicesKey = task
        try:
            choices = self.logic.modelChoices(task)
        except Exception as error:  # a damaged model index must not break the panel
            self._showStatus(_("Could not list the models: {error}").format(error=error))
            choices = [(_("Shipped model for this task"), "")]
        combo = self.ui.modelSelectorComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for label, _value in choices:
            combo.addItem(label)
        self._modelChoiceValues = [value for _label, value in choices]
        name = self._parameterNode.modelName
        combo.currentIndex = self._modelChoiceValues.index(name) if name in self._modelChoiceValues else 0
        combo.blockSignals(wasBlocked)
        if name not in self._modelChoiceValues:  # removed, or made for another task
            self._parameterNode.modelName = ""

    def onModelSelectorChanged(self, index) -> None:
        if self._parameterNode and 0 <= index < len(self._modelChoiceValues):
            if self._parameterNode.modelName != self._modelChoiceValues[index]:
                self._parameterNode.modelName = self._modelChoiceValues[index]

    def onCpuThreadsChanged(self, value) -> None:
        qt.QSettings().setValue(CPU_THREADS_SETTING, int(value))

    # ------------------------------------------------------------------ model manager
    def onModelsCollapsed(self, collapsed) -> None:
        if not collapsed:
            self._refreshModelList()

    def _refreshModelList(self, select: Optional[str] = None) -> None:
        try:
            self._listedModels = self.logic.listModels()
        except Exception as error:
            self._listedModels = []
            self.ui.modelsCardLabel.text = _escape(str(error))
        widget = self.ui.modelsListWidget
        wasBlocked = widget.blockSignals(True)
        widget.clear()
        for entry in self._listedModels:
            origin = _("added by you") if entry.origin == "user" else _("shipped")
            widget.addItem(f"{entry.name}  ({origin}, {entry.task})")
        widget.blockSignals(wasBlocked)
        self.ui.modelsFolderLabel.text = _("Models you add are kept in {folder}").format(
            folder=engine.userModelsFolder())
        names = [entry.name for entry in self._listedModels]
        widget.currentRow = names.index(select) if select in names else -1
        self.onModelsSelectionChanged(widget.currentRow)
        self._modelChoicesKey = None  # the selector offers the new list
        self._updateGUI()

    def _selectedModel(self):
        row = self.ui.modelsListWidget.currentRow
        return self._listedModels[row] if 0 <= row < len(self._listedModels) else None

    def onModelsSelectionChanged(self, row) -> None:
        entry = self._selectedModel()
        self.ui.removeModelButton.enabled = bool(entry is not None and entry.origin == "user" and not self._running)
        if entry is None:
            self.ui.modelsCardLabel.text = ""
            return
        rows = self.logic.modelManagerCard(entry.name)
        self.ui.modelsCardLabel.text = "".join(f"<b>{_escape(label)}:</b> {_escape(text)}<br>" for label, text in rows)

    def onAddModel(self) -> None:
        path = qt.QFileDialog.getOpenFileName(self.parent, _("Add a RevGAN model file"), "",
                                              _("RevGAN model files (*.safetensors)"))
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("The model file could not be added."), waitCursor=True):
            entry = self.logic.addModel(path)
            self._log(_("Added model {name} (SHA-256 {sha256}) from {path}").format(
                name=entry.name, sha256=entry.sha256, path=path))
            self._showStatus(_("Added model {name}.").format(name=entry.name))
            self._refreshModelList(select=entry.name)

    def onRemoveModel(self) -> None:
        entry = self._selectedModel()
        if entry is None or entry.origin != "user":
            return
        if not slicer.util.confirmOkCancelDisplay(
                _("Remove the model {name} from your model folder?").format(name=entry.name)):
            return
        with slicer.util.tryWithErrorDisplay(_("The model could not be removed."), waitCursor=True):
            self.logic.removeModel(entry.name)
            if self._parameterNode and self._parameterNode.modelName == entry.name:
                self._parameterNode.modelName = ""
            self._showStatus(_("Removed model {name}.").format(name=entry.name))
            self._refreshModelList()

    def _selectDevice(self, device: str) -> None:
        if device not in self._deviceNames:
            self._deviceNames.append(device)
            self.ui.deviceComboBox.addItem(device)
        index = self._deviceNames.index(device)
        if self.ui.deviceComboBox.currentIndex != index:
            self.ui.deviceComboBox.currentIndex = index

    def _listDevices(self) -> None:
        """Fill the device list from torch (only once torch is installed: never installs)."""
        if self._devicesListed or not dependencies.isInstalled("torch"):
            return
        try:
            devices = engine.availableDevices()
        except Exception as error:
            self._showStatus(_("Could not list GPUs: {error}").format(error=error))
            return
        self._devicesListed = True
        wasBlocked = self.ui.deviceComboBox.blockSignals(True)
        self.ui.deviceComboBox.clear()
        self._deviceNames = []
        for name, description in devices:
            self._deviceNames.append(name)
            self.ui.deviceComboBox.addItem(description)
        self.ui.deviceComboBox.blockSignals(wasBlocked)
        if self._parameterNode:
            self._selectDevice(self._parameterNode.device)

    def onAdvancedCollapsed(self, collapsed) -> None:
        if not collapsed:
            self._listDevices()

    def onDeviceChanged(self, index) -> None:
        if self._parameterNode and 0 <= index < len(self._deviceNames):
            if self._parameterNode.device != self._deviceNames[index]:
                self._parameterNode.device = self._deviceNames[index]

    def onModelPathChanged(self, path) -> None:
        if self._parameterNode and self._parameterNode.modelPath != path:
            self._parameterNode.modelPath = path

    def _showStatus(self, text: str) -> None:
        self.ui.statusLabel.text = text
        slicer.util.showStatusMessage(text, 5000)

    def _showProgress(self, done: int, total: int) -> None:
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.maximum = max(int(total), 1)
        self.ui.progressBar.value = int(done)

    @property
    def _running(self) -> bool:
        # One source of truth: the Logic knows whether it installs or translates.
        return self.logic is not None and self.logic.busy

    def _setRunning(self, running: bool) -> None:
        """Show (or hide) the progress bar; the running state itself is the Logic's."""
        self.ui.progressBar.setVisible(running)
        if running:
            self.ui.progressBar.maximum = 0  # busy indicator until the first progress event
            self.ui.progressBar.value = 0
        self._updateGUI()

    def _log(self, text: str) -> None:
        """A message of the run: the Python console (INFO) and the panel's log box."""
        logging.info(f"RevGANSlicer: {text}")
        self.ui.logTextEdit.appendPlainText(text)

    # ------------------------------------------------------------------ actions
    def onLoadPhantom(self, kind: str) -> None:
        if self._running:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not generate the phantom."), waitCursor=True):
            self._showStatus(_("Generating a chest phantom..."))
            slicer.app.processEvents()
            node = self.logic.loadPhantoms((kind,))[kind]
            slicer.util.setSliceViewerLayers(background=node, fit=True)
            self.selectPhantom(node, kind)

    def selectPhantom(self, node, kind: str) -> None:
        """Make a loaded phantom the input, with the task it is made for (also for phantoms
        loaded from the Sample Data module). Never during a run: its input must not change."""
        if self._running or not self._parameterNode:
            return
        self._parameterNode.inputVolume = node
        if kind == "lr":
            self._parameterNode.task = Task.SuperResolution
        elif self._parameterNode.task not in (Task.SharpToSmooth, Task.CustomModel):
            self._parameterNode.task = Task.SharpToSmooth
        self._showStatus(_("Loaded {name}.").format(name=node.GetName()))

    def onApplyButton(self) -> None:
        if self._running or self._parameterNode is None:
            return
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("RevGAN translation failed."), waitCursor=False):
            self._showStatus(_("Checking PyTorch..."))
            slicer.app.processEvents()
            with slicer.util.WaitCursor():
                summary = self.logic.ensureDependencies(askUser=True)  # BusyError on a second click
            self._listDevices()
            modelPath = self._chosenModel()
            path = self.logic.modelPathForTask(node.task, modelPath)
            allFrames = node.processAllFrames and self.logic.sequenceOf(node.inputVolume) is not None
            frames = len(sequences.frames(self.logic.sequenceOf(node.inputVolume)[1])) if allFrames else 1
            size = frames * self.logic.estimateOutputBytes(node.inputVolume, node.task,
                                                           self.logic.modelMetadata(path))
            if size > LARGE_OUTPUT_BYTES and not slicer.util.confirmOkCancelDisplay(
                    _("The result will take about {gib:.1f} GiB of memory. Continue?").format(gib=size / 2 ** 30)):
                return
            options = dict(task=node.task, modelPath=modelPath, direction=node.direction, device=node.device,
                           tileSize=node.tileSize, threads=node.cpuThreads)
            self._cancelRequested = False
            self.ui.logTextEdit.clear()
            self._log(summary)
            if allFrames:
                # Frames run here, one after the other (the model is loaded once).
                self._log(_("Every frame of the sequence, inside Slicer: {count} frames").format(count=frames))
                self._runHere(node.inputVolume, options, self.logic.translateSequence)
            elif node.runInSeparateProcess:
                # The Logic shows the wait cursor while it writes the input to a temporary file.
                self._job = self.logic.startTranslation(node.inputVolume, onLine=self._logProcessLine,
                                                        outputNode=node.outputVolume, **options)
                self._setRunning(True)
                self._showStatus(_("Running: {what}").format(what=self._job.description))
                self._pollTimer.start()
            else:
                self._runHere(node.inputVolume, dict(options, outputNode=node.outputVolume), self.logic.translate)

    def _runHere(self, inputNode, options, run) -> None:
        """``run`` (the Logic's translate or translateSequence) in this process, with
        progress, Cancel and messages in the panel."""
        from RevGANCore.errors import CancelledError

        def progress(done, total):
            self._showProgress(done, total)
            slicer.app.processEvents()  # keeps Slicer responsive and lets Cancel be clicked

        def cancel():
            slicer.app.processEvents()
            return self._cancelRequested

        def message(text):
            self._log(text)
            self._showStatus(text)

        self._showStatus(_("Running inside Slicer, tile by tile..."))
        self.ui.progressBar.setVisible(True)
        try:
            outputNode = run(inputNode, progress=progress, cancel=cancel, message=message, **options)
        except CancelledError:
            self._showStatus(_("Cancelled: no result was created."))
            return
        finally:
            self._setRunning(False)
        self._showResult(inputNode, outputNode)

    def onPollJob(self) -> None:
        job = self._job
        if job is None:
            self._pollTimer.stop()
            return
        code = job.poll()
        if job.progress is not None:
            self._showProgress(*job.progress)
        if job.statusMessage:
            self.ui.statusLabel.text = job.statusMessage
        if code is None:
            return
        self._pollTimer.stop()
        self._job = None
        from RevGANCore.errors import CancelledError

        inputNode = slicer.mrmlScene.GetNodeByID(job.inputNodeID)
        try:
            # The Logic shows the wait cursor while it reads the result (GBs for a large super-resolution).
            outputNode = self.logic.finishTranslation(job)  # the Logic is idle afterwards
        except CancelledError:
            self._showStatus(_("Cancelled: no result was created."))
            return
        except Exception as error:
            self._showStatus(_("Failed."))
            slicer.util.errorDisplay(_("RevGAN translation failed."), detailedText=str(error))
            return
        finally:
            self._setRunning(False)
        self._showResult(inputNode, outputNode)

    def _showResult(self, inputNode, outputNode) -> None:
        if self._parameterNode and self._parameterNode.showSideBySide:
            self.logic.showSideBySide(inputNode, outputNode)
        else:
            slicer.util.setSliceViewerLayers(background=outputNode, fit=True)
        seconds = self.logic.lastDuration
        note = self.ui.statusLabel.text if "memory" in self.ui.statusLabel.text.lower() else ""
        message = _("Done: {name}").format(name=outputNode.GetName())
        if seconds:
            message += _(" ({seconds:.1f} s)").format(seconds=seconds)
        # Warnings (e.g. a voxel spacing the model does not support) stay in view with the result.
        warnings = [_("Warning: {text}").format(text=text) for text in self.logic.lastWarnings]
        self._showStatus("\n".join([message] + ([note] if note else []) + warnings))

    def onCancelButton(self) -> None:
        self._cancelRequested = True
        if self._job is not None:
            self._showStatus(_("Cancelling..."))
            self._job.cancel()  # kills the process tree; onPollJob then reports it

    def _stopJob(self) -> None:
        """Stop any run (scene close, module reload) and leave the panel idle: Apply enabled,
        progress hidden, Cancel disabled."""
        self._cancelRequested = True
        if self._pollTimer is not None:
            self._pollTimer.stop()
        self._job = None
        if self.logic is not None:
            self.logic.stopActiveJob()
        self._setRunning(False)

    def _logProcessLine(self, line: str) -> None:
        """An output line of the separate process: its JSON events' text, or the raw line."""
        event = parseEvent(line)
        if event is None:
            self._log(line)
        elif event.get("event") == "message" and event.get("level") == "warning":
            self._log(_("Warning: {text}").format(text=event.get("text", "")))
        elif event.get("event") in ("message", "error"):
            self._log(str(event.get("text", "")))


#: Slicer setting (qt.QSettings) that keeps the CPU-thread choice between sessions.
CPU_THREADS_SETTING = "RevGANSlicer/CPUThreads"


def _savedCpuThreads() -> int:
    """The CPU-thread choice kept in Slicer's settings (0, automatic, when there is none)."""
    try:
        value = int(qt.QSettings().value(CPU_THREADS_SETTING, 0) or 0)
    except (TypeError, ValueError):
        return 0
    return min(max(value, 0), 256)


def _escape(text) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


#
# RevGANSlicerLogic
#


class RevGANSlicerLogic(ScriptedLoadableModuleLogic, TranslationLogic):
    """Everything the module computes, usable without the GUI (see
    RevGANSlicerLib.logic.TranslationLogic for the methods), plus the parameter node."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        TranslationLogic.__init__(self)

    def getParameterNode(self):
        return RevGANSlicerParameterNode(super().getParameterNode())

    def availableDevices(self):
        return engine.availableDevices()


#
# RevGANSlicerTest
#


class RevGANSlicerTest(ScriptedLoadableModuleTest):
    """Self-test, run by Slicer: phantom in, super-resolution and kernel conversion through
    the Logic on the CPU with small tiles, geometry and quality checked, then the layout.

    Quality ("closer to the ground truth than the input") needs the shipped trained models;
    without them the geometry checks run with a tiny untrained model and the quality checks
    are reported as skipped. On extension build machines (ctest sets
    REVGAN_SELFTEST_SKIP_INFERENCE=1), or without PyTorch, the tests that run models are
    skipped; the panel, model cards, node round trip and layout are still checked."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for name in ("test_PanelAndModelCards", "test_RoundTrip", "test_SuperResolution", "test_KernelConversion",
                     "test_SeparateProcess", "test_SideBySideLayout"):
            self.setUp()
            try:
                getattr(self, name)()
            except unittest.SkipTest as reason:
                self.delayDisplay(f"{name} skipped: {reason}")

    def _inferenceLogic(self):
        """A Logic ready to run models; SkipTest where models must not run (build machines,
        or no PyTorch and no permission to download it)."""
        from RevGANSlicerLib import testing

        reason = testing.inferenceSkipReason(os.environ, dependencies.isInstalled("torch"))
        if reason:
            raise unittest.SkipTest(reason)
        logic = RevGANSlicerLogic()
        logic.ensureDependencies(askUser=False)
        return logic

    def test_PanelAndModelCards(self):
        # Needs no PyTorch: what the build machines can check.
        self.delayDisplay("Module panel and every task's model card")
        self.assertIsNotNone(slicer.modules.revganslicer.widgetRepresentation())
        logic = RevGANSlicerLogic()
        for task in Task:
            self.assertTrue(logic.modelCard(task), f"no model card for {task.name}")

    def _case(self, shipped: bool):
        from RevGANSlicerLib import testing

        return testing.phantomCase(full=shipped)

    def test_RoundTrip(self):
        from RevGANSlicerLib import nodes, testing

        self.delayDisplay("Oblique volume node -> Volume -> node")
        node = testing.addObliqueVolumeNode(slicer.mrmlScene)
        before = slicer.util.arrayFromVolume(node).copy()
        volume = nodes.volumeFromNode(node)
        back = nodes.createOutputNode(volume, "round trip", referenceNode=node)
        self.assertTrue(testing.sameIjkToRas(back, node))
        self.assertTrue((slicer.util.arrayFromVolume(back) == before).all())
        self.assertTrue((slicer.util.arrayFromVolume(node) == before).all())

    def test_SuperResolution(self):
        self._runTask(Task.SuperResolution)

    def test_KernelConversion(self):
        self._runTask(Task.SharpToSmooth)

    def _runTask(self, task):
        from RevGANSlicerLib import testing

        logic = self._inferenceLogic()
        modelTask = taskInfo(task).modelTask
        shipped = engine.defaultModel(modelTask) is not None
        case = self._case(shipped)
        source, reference = ("lr", "hr") if task is Task.SuperResolution else ("sharp", "smooth")
        inputNode = logic.loadPhantoms((source,), volumes=case)[source]
        inputBefore = slicer.util.arrayFromVolume(inputNode).copy()
        self.delayDisplay(f"{taskInfo(task).buttonText} on the CPU, 32-voxel tiles"
                          + ("" if shipped else " (tiny untrained model: no shipped model installed)"))
        model = None if shipped else testing.tinyModel(modelTask)
        ticks = []
        outputNode = logic.translate(inputNode, task, device="cpu", tileSize=32, model=model,
                                     progress=lambda done, total: ticks.append((done, total)))
        self.assertNotEqual(outputNode.GetID(), inputNode.GetID())
        self.assertTrue((slicer.util.arrayFromVolume(inputNode) == inputBefore).all(), "input was modified")
        self.assertTrue(ticks and ticks[-1][0] == ticks[-1][1], "no per-tile progress")
        problems = testing.geometryProblems(inputNode, outputNode, task)
        self.assertEqual(problems, [])
        self.assertEqual(testing.windowLevel(outputNode), testing.windowLevel(inputNode))
        if shipped:
            better = testing.closerToReference(inputNode, outputNode, case[reference])
            self.assertTrue(better[0], better[1])
            self.delayDisplay(better[1])
        else:
            logging.warning(f"RevGANSlicerTest: quality check of {task.name} skipped: no shipped model")

    def test_SeparateProcess(self):
        from RevGANSlicerLib import testing

        logic = self._inferenceLogic()
        case = testing.phantomCase(full=False)
        inputNode = logic.loadPhantoms(("sharp",), volumes=case)["sharp"]
        modelPath = engine.defaultModel("kernel")
        folder = None
        if modelPath is None:
            folder, modelPath = testing.tinyModelFile("kernel")
        self.delayDisplay("Kernel conversion in a separate process (PythonSlicer)")
        try:
            outputNode = logic.translateInSeparateProcess(inputNode, Task.SharpToSmooth, modelPath=modelPath,
                                                          device="cpu", tileSize=32, timeout=600)
        finally:
            if folder:
                import shutil

                shutil.rmtree(folder, ignore_errors=True)
        self.assertEqual(testing.geometryProblems(inputNode, outputNode, Task.SharpToSmooth), [])

    def test_SideBySideLayout(self):
        from RevGANSlicerLib import layout, testing

        logic = RevGANSlicerLogic()
        first = testing.addObliqueVolumeNode(slicer.mrmlScene, name="original")
        second = testing.addObliqueVolumeNode(slicer.mrmlScene, name="result")
        self.delayDisplay("Side-by-side layout")
        logic.showSideBySide(first, second)
        slicer.app.processEvents()
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            logging.warning("RevGANSlicerTest: no main window (--no-main-window): layout check skipped")
            return
        self.assertEqual(layoutManager.layout, slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        red = layout.sliceCompositeNode(slicer.mrmlScene, "Red")
        yellow = layout.sliceCompositeNode(slicer.mrmlScene, "Yellow")
        self.assertEqual(layoutManager.sliceWidget("Yellow").mrmlSliceCompositeNode().GetID(), yellow.GetID())
        self.assertEqual(red.GetBackgroundVolumeID(), first.GetID())
        self.assertEqual(yellow.GetBackgroundVolumeID(), second.GetID())
        self.assertTrue(red.GetLinkedControl() and yellow.GetLinkedControl())
