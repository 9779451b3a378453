import subprocess
import sys


def test_import_diled_without_ray_or_deepspeed():
    """diled/ is the model library: importing all of it must not need ray or deepspeed."""
    code = (
        "import sys\n"
        "sys.modules['ray'] = None\n"       # a None entry makes `import ray` raise ImportError
        "sys.modules['deepspeed'] = None\n"
        "import pkgutil, importlib, diled\n"
        "for m in pkgutil.walk_packages(diled.__path__, 'diled.'):\n"
        "    importlib.import_module(m.name)\n"
        "from diled import DiLED, LatentDiffusion, MLPSkipNet\n"
        "assert not any(k.split('.')[0] in ('ray', 'deepspeed') and sys.modules[k] is not None for k in sys.modules)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
