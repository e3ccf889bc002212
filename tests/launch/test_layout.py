"""The package's dependencies run one way: utils <- ops <- archs <- inference <- data, losses <- models <- tools and
the entry points; no module imports one above it, and no two modules import each other (read from the sources,
imports inside functions included)."""
import ast
import os

from conftest import REPO_ROOT

PACKAGE = os.path.join(REPO_ROOT, 'spikerir_plugin')
LEVELS = {'utils': 0, 'ops': 1, 'archs': 2, 'inference': 3, 'data': 4, 'losses': 4, 'models': 5, 'tools': 6,
          'launch': 6, 'recipes': 6, 'demo': 7, 'train': 7, 'test': 7, '__init__': 8}


def module_name(path):
    rel = os.path.relpath(path, REPO_ROOT)[:-len('.py')].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def plugin_imports(path):
    """The spikerir_plugin modules a file imports (absolute or relative), anywhere in the file."""
    name = module_name(path)
    package = name if path.endswith('__init__.py') else name.rpartition('.')[0]
    found = set()
    for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith('spikerir_plugin'))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split('.')[:len(package.split('.')) - node.level + 1]
                target = '.'.join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ''
            if target.startswith('spikerir_plugin'):
                found.add(target)
                found.update(f'{target}.{a.name}' for a in node.names)
    return found


def modules():
    out = {}
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith('.py'):
                out[module_name(os.path.join(root, f))] = os.path.join(root, f)
    return out


def level(name):
    parts = name.split('.')
    return LEVELS[parts[1] if len(parts) > 1 else '__init__']


def test_dependencies_run_one_way():
    known = modules()
    upward = []
    for name, path in known.items():
        if len(name.split('.')) == 1:
            continue  # the package's __init__ imports everything to register it
        for target in plugin_imports(path):
            if target in known and len(target.split('.')) > 1 and level(target) > level(name):
                upward.append(f'{name} imports {target}')
    assert not upward, '\n'.join(upward)


def test_no_import_cycles():
    known = modules()
    graph = {name: {t for t in plugin_imports(path) if t in known and t != name and len(t.split('.')) > 1}
             for name, path in known.items() if len(name.split('.')) > 1}
    cycles = []

    def visit(node, stack, seen):
        for nxt in graph.get(node, ()):
            if nxt in stack:
                cycles.append(' -> '.join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, stack + [nxt], seen)

    for start in graph:
        visit(start, [start], {start})
    assert not cycles, '\n'.join(sorted(set(cycles))[:10])


def test_the_compat_module_holds_import_shims_only():
    source = open(os.path.join(REPO_ROOT, 'spikerir_compat.py'), encoding='utf-8').read()
    imported = {a.name.split('.')[0] for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import)
                for a in node.names}
    imported |= {node.module.split('.')[0] for node in ast.walk(ast.parse(source))
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {'importlib', 'sys'}, imported  # stdlib only: nothing heavy at interpreter start
    assert 'spikerir_plugin' not in source.replace('spikerir_plugin/launch.py', '')
