"""Use a trained model: `hydradet.load(path).predict(source)` on images, folders, globs, arrays and videos."""
