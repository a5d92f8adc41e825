export * from './logger.js';
export * from './systemd-unit.js';
export * from './runnable-install.js';
