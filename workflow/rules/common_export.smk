# Input and param functions of the export and notebooks rules (analysis.smk): the study data committed under
# results/<scale>/study, and the analysis notebooks executed against it.

from analysis.export import MANIFEST, export_dir
from analysis.notebook_study import default_results

EXPORT = str(export_dir(R))
NOTEBOOKS = [os.path.join(workflow.basedir, "analysis", name) for name in ("explore.ipynb", "training_curves.ipynb")]


def export_targets():
    """The export and the notebooks' record: part of `all` at every scale."""
    return [EXPORT, f"{W}/notebooks.json"]


def export_inputs(wildcards):
    """Every file the export copies or summarises: the manifest, each run's outputs (through the manifest, with
    their run folders behind result.json) and its run config."""
    return {"study": P["manifest"], "runs": all_run_outputs(wildcards),
            "results": [P["result"].format(rid=rid) for rid in sorted(STUDY.runs)],
            "configs": [P["run_config"].format(rid=rid) for rid in sorted(STUDY.runs)]}


def exported_manifest(wildcards, input):
    """The manifest inside the export."""
    return os.path.join(input.study, MANIFEST)


def notebooks_dir(wildcards):
    """Where the executed notebooks go: at the default scale (the notebooks' default results folder) the notebooks'
    own folder, so that the committed notebooks carry its outputs; elsewhere results/<scale>/notebooks."""
    if Path(R) == default_results(Path(workflow.basedir)):
        return os.path.join(workflow.basedir, "analysis")
    return f"{R}/notebooks"
