# lit configuration for dmoe's command-line and codegen tests.
#
# Loaded through the lit.site.cfg.py that Meson writes into <build>/tests/lit, which supplies the paths
# below. Run one test with: python3 <lit.py> -v <build>/tests/lit/emit-sdd.test
import os
import shutil
import sys

import lit.formats

config.name = 'dmoe'
config.test_format = lit.formats.ShTest()
config.suffixes = ['.test']
config.excludes = ['Inputs']

if not getattr(config, 'dmoe_exe', None):
    lit_config.fatal('dmoe lit tests run from the build directory: lit <build>/tests/lit[/<file>.test]')

config.test_source_root = os.path.dirname(os.path.abspath(__file__))
# Meson gives every test its own exec root (--param dmoe_exec_root=…): lit rewrites the suite's
# .lit_test_times.txt there after each run, and the parallel runs of one shared file raced (a reader saw a
# half-written line and every lit test of that run failed to start).
config.test_exec_root = lit_config.params.get('dmoe_exec_root', config.dmoe_lit_build_dir)

config.substitutions.append(('%dmoe', config.dmoe_exe))
# tools/product-gaps.py under the Python that runs lit (not a name lit expands itself, like %t or %p).
config.substitutions.append(('%gaps', sys.executable + ' ' + os.path.join(
    os.path.dirname(os.path.dirname(config.test_source_root)), 'tools', 'product-gaps.py')))
# Whole words only, so that e.g. "FileCheck-14" or a path containing "not" is left alone.
config.substitutions.append((r'(?<![-./\w])FileCheck(?![-./\w])', config.filecheck))
if config.not_exe:
    config.substitutions.append((r'(?<![-./\w])not(?![-./\w])', config.not_exe))

# lit hands tests a scrubbed environment. The kernel cache must never be the user's own: Meson points
# DMOE_CACHE_DIR into the build tree; a hand-run lit gets a folder there too.
config.environment['DMOE_CACHE_DIR'] = (os.environ.get('DMOE_CACHE_DIR')
                                        or os.path.join(config.dmoe_lit_build_dir, 'cache'))
for var in ('CUDA_HOME', 'CUDA_PATH'):
    if os.environ.get(var):
        config.environment[var] = os.environ[var]


def has_disassembler():
    """Mirrors dmoe inspect's search, so tests can tell whether it will find a SASS disassembler."""
    dirs = [os.path.join(os.environ[v], 'bin') for v in ('CUDA_HOME', 'CUDA_PATH') if os.environ.get(v)]
    dirs.append('/usr/local/cuda/bin')
    dirs += config.environment.get('PATH', os.environ.get('PATH', '')).split(os.pathsep)
    return any(shutil.which(tool, path=os.pathsep.join(dirs)) for tool in ('cuobjdump', 'nvdisasm'))


if has_disassembler():
    config.available_features.add('disassembler')

# A SASS disassembler fetched by tools/setup.sh into <repo>/.tools/cuda (cuobjdump + nvdisasm from PyPI):
# the SASS tests point CUDA_HOME at it explicitly, so the other tests see the machine as it is.
sass_home = os.path.join(os.path.dirname(os.path.dirname(config.test_source_root)), '.tools', 'cuda')
if os.access(os.path.join(sass_home, 'bin', 'cuobjdump'), os.X_OK) and \
        os.access(os.path.join(sass_home, 'bin', 'nvdisasm'), os.X_OK):
    config.available_features.add('sass-tools')
    config.substitutions.append(('%sass_home', sass_home))
