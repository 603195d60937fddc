import pytest


@pytest.fixture(scope="session")
def small_evalset(tmp_path_factory):
    """3 look-alike families (72 images), built once per session."""
    from lh2face_plugin.bench.evalset import EvalSetConfig, build_evalset

    return build_evalset(str(tmp_path_factory.mktemp("bench") / "evalset"), EvalSetConfig(families=3, seed=11),
                         progress=False)


@pytest.fixture(scope="session")
def tiny_train_data(tmp_path_factory):
    """A 6-identity x 4-image synthetic RecordIO training set."""
    import os

    from lh2face_plugin.data.synthetic import generate_dataset

    paths = generate_dataset(str(tmp_path_factory.mktemp("train") / "data"), identities=6, images_per_id=4, seed=0,
                             eval_identities=4, verify_pairs=4, render_eval=0, progress=False)
    return os.path.dirname(paths["rec"])
