export * from './logger.js';
export * from './systemd-unit.js';
export * from './runnable-install.js';
export * from './config-file.js';
export * from './config-problems.js';
export * from './plain-histogram.js';
